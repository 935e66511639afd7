"""The prefix merge of many attempts at once, on flat arrays.

Whether call i joins the sample of call i-1 depends on that pair alone (same attempt, both with
token ids, same agent, same model version, call i's prompt beginning with call i-1's prompt +
response), so every decision is a NumPy comparison of neighbours except the prefix test itself:
one `bytes.startswith` per candidate pair. Samples are then cut out of the flat token arrays with
index ranges — no Python object per call or per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Merge = Literal["prefix", "none"]

NO_TOKEN_IDS, DIFFERENT_AGENT, DIFFERENT_VERSION, NOT_A_PREFIX, RETOKENIZED = range(1, 6)
REASON_NAMES = {NO_TOKEN_IDS: "no_token_ids", DIFFERENT_AGENT: "different_agent",
                DIFFERENT_VERSION: "different_model_version", NOT_A_PREFIX: "not_a_prefix",
                RETOKENIZED: "response_retokenized"}


@dataclass
class FlatCalls:
    """LLM calls of many attempts in call order, an attempt's calls adjacent. Call i's prompt ids
    are `prompt_values[prompt_start[i]:prompt_end[i]]`; its response ids and their sampling
    logprobs (float32, NaN where unknown) are `response_values` / `logprobs` over
    `[response_start[i]:response_end[i]]`. `group`, `agent` and `version` are integer codes."""

    group: np.ndarray
    agent: np.ndarray
    version: np.ndarray
    prompt_values: np.ndarray
    prompt_start: np.ndarray
    prompt_end: np.ndarray
    response_values: np.ndarray
    response_start: np.ndarray
    response_end: np.ndarray
    logprobs: np.ndarray

    def __len__(self) -> int:
        return len(self.group)

    @property
    def prompt_length(self) -> np.ndarray:
        return self.prompt_end - self.prompt_start

    @property
    def response_length(self) -> np.ndarray:
        return self.response_end - self.response_start


@dataclass
class Merged:
    """Samples as runs of adjacent calls `first[s]..last[s]`; breaks as (call, reason code, position
    or -1) in call order."""

    first: np.ndarray
    last: np.ndarray
    break_call: np.ndarray
    break_reason: np.ndarray
    break_position: np.ndarray


def ranges(start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The concatenation of `arange(start[k], start[k] + length[k])` over k."""
    length = np.asarray(length, np.int64)
    total = int(length.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    before = np.cumsum(length) - length
    return np.arange(total, dtype=np.int64) + np.repeat(np.asarray(start, np.int64) - before, length)


def offsets_of(length: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(length, dtype=np.int64)])


def run_sums(values: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Sum of values[first[s]..last[s]] for each run s (0 for an empty run, last = first - 1)."""
    total = np.concatenate([[0], np.cumsum(values)])
    return total[last + 1] - total[first]


def merge_calls(calls: FlatCalls, how: Merge) -> Merged:
    n = len(calls)
    p_len, r_len = calls.prompt_length, calls.response_length
    has = (p_len > 0) & (r_len > 0)
    follows = np.zeros(n, bool)  # a sample is open when call i comes: it may join it
    if how == "prefix" and n > 1:
        follows[1:] = has[1:] & has[:-1] & (calls.group[1:] == calls.group[:-1])
    reason = np.where(has, 0, NO_TOKEN_IDS).astype(np.int8)
    previous_agent = np.concatenate([[0], calls.agent[:-1]])
    previous_version = np.concatenate([[0], calls.version[:-1]])
    reason[follows & (calls.agent != previous_agent)] = DIFFERENT_AGENT
    reason[follows & (reason == 0) & (calls.version != previous_version)] = DIFFERENT_VERSION
    tested = np.flatnonzero(follows & (reason == 0))
    joins = np.zeros(n, bool)
    joins[tested[_prefix_holds(calls, tested)]] = True
    reason[follows & (reason == 0) & ~joins] = NOT_A_PREFIX

    starts = has & ~joins
    first = np.flatnonzero(starts)
    sample_of = np.cumsum(starts) - 1
    last = first + np.bincount(sample_of[has], minlength=len(first)) - 1

    break_call = np.flatnonzero(reason)
    break_reason = reason[break_call]
    position = np.full(len(break_call), -1, np.int64)
    for k in np.flatnonzero(break_reason == NOT_A_PREFIX).tolist():
        i = int(break_call[k])
        at = _first_difference(calls, i)
        position[k] = at
        if at >= p_len[first[sample_of[i - 1]]]:  # past the open sample's prompt: in an earlier answer
            break_reason[k] = RETOKENIZED
    return Merged(first, last, break_call, break_reason, position)


def _slices(calls: FlatCalls, i: int) -> tuple[np.ndarray, np.ndarray]:
    return (calls.prompt_values[calls.prompt_start[i]:calls.prompt_end[i]],
            calls.response_values[calls.response_start[i]:calls.response_end[i]])


def _prefix_holds(calls: FlatCalls, tested: np.ndarray) -> np.ndarray:
    """For each call i in `tested`: does its prompt begin with call i-1's prompt + response? The
    response part (a few tokens a call) is compared in NumPy for all pairs at once; the prompt
    part with one memcmp each, a prompt's bytes serving again as the next call's prefix."""
    p_len, r_len = calls.prompt_length, calls.response_length
    if len(tested) == 0:
        return np.zeros(0, bool)
    i_all = tested[p_len[tested] >= p_len[tested - 1] + r_len[tested - 1]]
    j_all = i_all - 1
    said = ranges(calls.prompt_start[i_all] + p_len[j_all], r_len[j_all])  # where i's prompt repeats j's answer
    answer = ranges(calls.response_start[j_all], r_len[j_all])
    wrong = calls.prompt_values[said] != calls.response_values[answer]
    answer_offsets = offsets_of(r_len[j_all])
    answer_repeated = run_sums(wrong, answer_offsets[:-1], answer_offsets[1:] - 1) == 0
    values, ps, pe = calls.prompt_values, calls.prompt_start.tolist(), calls.prompt_end.tolist()
    holds = np.zeros(len(calls), bool)
    kept, kept_bytes = -1, b""
    for i in i_all[answer_repeated].tolist():
        j = i - 1
        head = kept_bytes if kept == j else values[ps[j]:pe[j]].tobytes()
        kept, kept_bytes = i, values[ps[i]:pe[i]].tobytes()
        holds[i] = kept_bytes.startswith(head)
    return holds[tested]


def _first_difference(calls: FlatCalls, i: int) -> int:
    """Where call i's prompt first differs from call i-1's prompt + response (the shorter length
    when one is a prefix of the other)."""
    prompt, _ = _slices(calls, i)
    before = np.concatenate(_slices(calls, i - 1))
    n = min(len(prompt), len(before))
    diff = np.flatnonzero(prompt[:n] != before[:n])
    return int(diff[0]) if len(diff) else n


@dataclass
class SampleTokens:
    """The samples' token arrays, flat, with offsets (sample s: `[offsets[s]:offsets[s + 1]]`)."""

    prompt_ids: np.ndarray
    prompt_offsets: np.ndarray
    response_ids: np.ndarray
    response_mask: np.ndarray
    response_logprobs: np.ndarray
    response_offsets: np.ndarray


def sample_tokens(calls: FlatCalls, merged: Merged, keep: np.ndarray | None = None) -> SampleTokens:
    """Each sample is its last call's prompt + response: the first call's prompt is the sample's
    prompt, the rest its response — mask 1 and the sampling logprobs on each call's own response
    tokens, mask 0 and NaN on what came between (tools, environment, user)."""
    first, last = merged.first, merged.last
    if keep is not None:
        first, last = first[keep], last[keep]
    p_len, r_len = calls.prompt_length, calls.response_length
    base = p_len[first]
    prompt_offsets = offsets_of(base)
    prompt_ids = calls.prompt_values[ranges(calls.prompt_start[first], base)]

    between = p_len[last] - base
    response_offsets = offsets_of(between + r_len[last])
    size = int(response_offsets[-1])
    ids = np.empty(size, calls.prompt_values.dtype)
    ids[ranges(response_offsets[:-1], between)] = calls.prompt_values[ranges(calls.prompt_start[last] + base, between)]
    ids[ranges(response_offsets[:-1] + between, r_len[last])] = \
        calls.response_values[ranges(calls.response_start[last], r_len[last])]

    turns = last - first + 1
    member = ranges(first, turns)  # every call of every kept sample
    sample = np.repeat(np.arange(len(first)), turns)
    at = ranges(response_offsets[:-1][sample] + p_len[member] - base[sample], r_len[member])
    mask = np.zeros(size, np.int8)
    mask[at] = 1
    logprobs = np.full(size, np.nan, np.float32)
    logprobs[at] = calls.logprobs[ranges(calls.response_start[member], r_len[member])]
    return SampleTokens(prompt_ids, prompt_offsets, ids, mask, logprobs, response_offsets)
