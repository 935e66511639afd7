"""Token-level trajectories: what a multi-turn RL trainer consumes, built from the LLM calls the
triplet adapter chooses (same attempts, same deduplication, same reward matching).

With `merge="prefix"` the calls of one attempt are walked in order (sequence id, then start time);
call k+1 joins the current sample when its prompt ids begin with the sample's prompt + response so
far: the tokens between that prefix and the end of its prompt (tool results, the environment, the
user) are appended with mask 0 and NaN logprobs, then its response with mask 1 and its sampling
logprobs. Otherwise a new sample starts and `.breaks` says why — never a re-tokenization.
`merge="none"` makes one sample per call.
"""

from __future__ import annotations

import math
from collections import Counter
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Iterable, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from spanpipe.emit.setup import TASK_ID
from spanpipe.semconv.llm_call import GATEWAY_SCOPE
from spanpipe.warehouse.payloads import PAYLOAD_VERSION
from spanpipe.warehouse.source import WarehouseError
from spanpipe.adapters.bulk import value_codes, wanted_sql
from spanpipe.adapters.trajectory_merge import (REASON_NAMES, FlatCalls, Merge, merge_calls, offsets_of, ranges,
                                               run_sums, sample_tokens)
from spanpipe.adapters.triplet_types import TokenLists, one_array

if TYPE_CHECKING:
    from spanpipe.warehouse.source import SqlSource

RewardMode = Literal["final", "per_turn"]

MODEL_VERSION = "spanpipe.model_version"

SAMPLE_SCHEMA = pa.schema([
    ("rollout_id", pa.string()), ("attempt_id", pa.string()), ("sample_index", pa.int32()),
    ("prompt_ids", pa.list_(pa.int32())), ("response_ids", pa.list_(pa.int32())),
    ("response_mask", pa.list_(pa.int8())), ("response_logprobs", pa.list_(pa.float32())),
    ("reward", pa.float64()), ("num_turns", pa.int32()), ("span_ids", pa.list_(pa.string())),
    ("model_versions", pa.list_(pa.string())), ("task_id", pa.string()),
])
BREAK_SCHEMA = pa.schema([("rollout_id", pa.string()), ("attempt_id", pa.string()), ("span_id", pa.string()),
                          ("reason", pa.string()), ("position", pa.int64())])
BREAK_REASONS = tuple(REASON_NAMES.values())


def merge_reference(calls: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, int | None]]]:
    """The prefix merge of one attempt in plain Python lists — the reference the NumPy path is
    tested against. Each call: {span_id, prompt, response, logprobs, agent, version} (ids lists;
    an empty prompt or response means no token ids)."""
    samples: list[dict[str, Any]] = []
    breaks: list[tuple[str, int | None]] = []
    cur: dict[str, Any] | None = None
    for c in calls:
        if not c["prompt"] or not c["response"]:
            breaks.append(("no_token_ids", None))
            cur = None
            continue
        if cur is not None:
            full = cur["prompt"] + cur["response"]
            if c["agent"] != cur["agent"]:
                breaks.append(("different_agent", None))
            elif c["version"] != cur["version"]:
                breaks.append(("different_model_version", None))
            elif c["prompt"][:len(full)] == full:
                gap = c["prompt"][len(full):]
                cur["response"] += gap + c["response"]
                cur["mask"] += [0] * len(gap) + [1] * len(c["response"])
                cur["logprobs"] += [math.nan] * len(gap) + list(c["logprobs"])
                cur["spans"].append(c["span_id"])
                continue
            else:
                k = next((i for i, (x, y) in enumerate(zip(c["prompt"], full)) if x != y), min(len(c["prompt"]), len(full)))
                breaks.append(("response_retokenized" if k >= len(cur["prompt"]) else "not_a_prefix", k))
        cur = {"prompt": list(c["prompt"]), "response": list(c["response"]), "mask": [1] * len(c["response"]),
               "logprobs": list(c["logprobs"]), "spans": [c["span_id"]], "agent": c["agent"], "version": c["version"]}
        samples.append(cur)
    return samples, breaks


def _version_number(v: str) -> int | None:
    """`12` → 12, `step-12` → 12 (trailing digits), else None."""
    digits = v[len(v.rstrip("0123456789")):]
    return int(digits) if digits else None


def stale(versions: list[str], current_version: str | None, max_staleness: int | None) -> bool:
    """True when a version is older than current - max_staleness (integers, or text ending in one
    such as `step-12`); versions that do not parse must equal the current one when max_staleness is 0."""
    if max_staleness is None or current_version is None:
        return False
    cur = _version_number(current_version)
    for v in versions:
        n = _version_number(v) if v else None
        if cur is not None and n is not None:
            if n < cur - max_staleness:
                return True
        elif v != current_version and max_staleness == 0:
            return True
    return False


class Trajectories:
    """`.table` (one row per sample, SAMPLE_SCHEMA), `.breaks` (BREAK_SCHEMA), `.reasons`
    (rollout_id → why it gave no sample), `.cursor` (for `since=`)."""

    def __init__(self, table: pa.Table, breaks: pa.Table, reasons: dict[str, str], cursor: int | None) -> None:
        self.table, self.breaks, self.reasons, self.cursor = table, breaks, reasons, cursor

    def __len__(self) -> int:
        return self.table.num_rows

    def __repr__(self) -> str:
        return f"Trajectories({len(self)} samples, {self.breaks.num_rows} breaks, {len(self.reasons)} rollouts without any)"

    def to_numpy(self, pad_to: tuple[int, int] | None = None, pad_id: int = 0) -> dict[str, np.ndarray]:
        """Padded arrays with verl's names: prompts left-padded, responses right-padded, to the
        longest of each (or `pad_to` = (prompt_length, response_length)); `input_ids` = prompts +
        responses, `attention_mask`, `position_ids`, `response_mask`, `rollout_log_probs` (0 in
        padding and where unknown), `rewards`."""
        n = self.table.num_rows
        prompts = self.table.column("prompt_ids").combine_chunks()
        responses = self.table.column("response_ids").combine_chunks()
        p_len = pc.list_value_length(prompts).to_numpy(zero_copy_only=False).astype(np.int64) if n else np.zeros(0, np.int64)
        r_len = pc.list_value_length(responses).to_numpy(zero_copy_only=False).astype(np.int64) if n else np.zeros(0, np.int64)
        P = int(p_len.max(initial=0)) if pad_to is None else pad_to[0]
        R = int(r_len.max(initial=0)) if pad_to is None else pad_to[1]
        if n and (p_len.max() > P or r_len.max() > R):
            raise ValueError(f"a sample is longer than pad_to={pad_to}: prompt {p_len.max()}, response {r_len.max()}")
        out_p = np.full((n, P), pad_id, np.int64)
        out_r = np.full((n, R), pad_id, np.int64)
        mask_p = np.zeros((n, P), np.int64)
        mask_r = np.zeros((n, R), np.int64)
        resp_mask = np.zeros((n, R), np.int64)
        logp = np.zeros((n, R), np.float32)
        p_vals = prompts.values.to_numpy(zero_copy_only=False) if n else np.zeros(0)
        r_vals = responses.values.to_numpy(zero_copy_only=False) if n else np.zeros(0)
        p_off = prompts.offsets.to_numpy() if n else np.zeros(1, np.int64)
        r_off = responses.offsets.to_numpy() if n else np.zeros(1, np.int64)
        m_vals = self.table.column("response_mask").combine_chunks().values.to_numpy(zero_copy_only=False) if n else None
        l_vals = self.table.column("response_logprobs").combine_chunks().values.to_numpy(zero_copy_only=False) if n else None
        for i in range(n):
            a, b = p_off[i], p_off[i + 1]
            out_p[i, P - (b - a):] = p_vals[a:b]
            mask_p[i, P - (b - a):] = 1
            a, b = r_off[i], r_off[i + 1]
            out_r[i, :b - a] = r_vals[a:b]
            mask_r[i, :b - a] = 1
            resp_mask[i, :b - a] = m_vals[a:b]
            logp[i, :b - a] = np.nan_to_num(l_vals[a:b], nan=0.0)
        attention = np.concatenate([mask_p, mask_r], axis=1)
        return {
            "prompts": out_p, "responses": out_r, "response_mask": resp_mask,
            "input_ids": np.concatenate([out_p, out_r], axis=1), "attention_mask": attention,
            "position_ids": np.clip(np.cumsum(attention, axis=1) - 1, 0, None),
            "rollout_log_probs": logp,
            "rewards": self.table.column("reward").to_numpy(zero_copy_only=False).astype(np.float32),
        }


class TrajectoryBuilder:
    def __init__(self, warehouse: SqlSource, **triplet_options: Any) -> None:
        from spanpipe.adapters.triplets import TripletAdapter

        self.warehouse = warehouse
        self.triplets = TripletAdapter(warehouse, **{"token_ids_only": True, **triplet_options})

    def build(self, rollout_ids: Iterable[str] | None = None, since: int | None = None, mode: str | None = None,
              merge: Merge = "prefix", reward: RewardMode = "final", max_staleness: int | None = None,
              current_version: str | None = None) -> Trajectories:
        if merge not in ("prefix", "none"):
            raise ValueError(f"merge must be 'prefix' or 'none', got {merge!r}")
        if reward not in ("final", "per_turn"):
            raise ValueError(f"reward must be 'final' or 'per_turn', got {reward!r}")
        # Asked for by id, what the triplets do not carry is read meanwhile (DuckDB works outside
        # the GIL while the triplet selection decides in NumPy).
        requested = None if rollout_ids is None else list(dict.fromkeys(rollout_ids))
        early = None if requested is None else self._side_reads(requested, reward)
        self.triplets.match_rewards = reward == "per_turn"  # "final" reads the rollout's own
        chosen = self.triplets.triplets(requested, since=since, mode=mode)
        reasons = dict(chosen.reasons)
        table = chosen.to_arrow(token_ids=False)
        if table.num_rows == 0:
            return Trajectories(SAMPLE_SCHEMA.empty_table(), BREAK_SCHEMA.empty_table(), reasons, chosen.cursor)
        rollouts = list(dict.fromkeys(table.column("rollout_id").to_pylist()))
        side = early or self._side_reads(rollouts, reward)
        facts = side.span_facts()
        calls, described = self._calls(table, chosen.token_lists(), facts)
        merged = merge_calls(calls, merge)
        first, last = merged.first, merged.last
        # a sample is left out when any of its calls has a stale model version
        stale_call = _stale_calls(described["version"], current_version, max_staleness)
        stale_sample = _any_in_runs(stale_call, first, last)
        keep = ~stale_sample
        kept_first, kept_last = first[keep], last[keep]
        tokens = sample_tokens(calls, merged, keep)

        def per_sample(name: str) -> pa.Array:
            return described[name].take(pa.array(kept_first))

        sample_rollouts = per_sample("rollout_id")
        if reward == "final":
            sample_reward = _lookup(sample_rollouts, side.final_rewards(), pa.float64())
        else:
            sample_reward = _sum_in_runs(described["reward"], kept_first, kept_last)
        turns = (kept_last - kept_first + 1).astype(np.int32)
        members = ranges(kept_first, turns)
        member_offsets = pa.array(offsets_of(turns).astype(np.int32))
        versions = pc.fill_null(described["version"], "")
        out = pa.table({
            "rollout_id": sample_rollouts,
            "attempt_id": per_sample("attempt_id"),
            "sample_index": pa.array(_index_in_runs(calls.group[kept_first]), pa.int32()),
            "prompt_ids": _lists(tokens.prompt_offsets, tokens.prompt_ids, pa.int32()),
            "response_ids": _lists(tokens.response_offsets, tokens.response_ids, pa.int32()),
            "response_mask": _lists(tokens.response_offsets, tokens.response_mask, pa.int8()),
            "response_logprobs": _lists(tokens.response_offsets, tokens.response_logprobs, pa.float32()),
            "reward": sample_reward,
            "num_turns": pa.array(turns, pa.int32()),
            "span_ids": pa.ListArray.from_arrays(member_offsets, described["span_id"].take(pa.array(members))),
            "model_versions": pa.ListArray.from_arrays(member_offsets, versions.take(pa.array(members))),
            "task_id": _lookup(sample_rollouts, side.task_ids(), pa.string()),
        }, schema=SAMPLE_SCHEMA)

        produced = set(sample_rollouts.to_pylist())
        stale_count = Counter(described["rollout_id"].take(pa.array(first[stale_sample])).to_pylist())
        for rid in rollouts:
            if rid in produced:
                continue
            if stale_count[rid]:
                reasons[rid] = f"{stale_count[rid]} sample(s) left out: a model version older than " \
                               f"{current_version} - {max_staleness}"
            else:
                reasons[rid] = "no LLM call with token ids (see .breaks: no_token_ids)"
        at = pa.array(merged.break_call)
        breaks = pa.table({
            "rollout_id": described["rollout_id"].take(at),
            "attempt_id": described["attempt_id"].take(at),
            "span_id": described["span_id"].take(at),
            "reason": pa.array([REASON_NAMES[r] for r in merged.break_reason.tolist()], pa.string()),
            "position": pa.array(merged.break_position, pa.int64(), mask=merged.break_position < 0),
        }, schema=BREAK_SCHEMA)
        return Trajectories(out, breaks, reasons, chosen.cursor)

    def _side_reads(self, rollout_ids: list[str], reward: RewardMode) -> _SideReads:
        return _SideReads(self.warehouse, rollout_ids, reward == "final")

    def _calls(self, table: pa.Table, tokens: TokenLists, facts: pa.Table) -> tuple[FlatCalls, dict[str, pa.Array]]:
        """The triplets as flat calls in call order (attempt by attempt, in the triplets' order;
        inside one by sequence id, nulls last, then start time), and beside them, in the same
        order, what the table needs of each call: rollout_id, attempt_id, span_id, reward, version.
        Token ids stay where the stored payloads were read (triplet i's at row `tokens.row[i]`)."""
        n = table.num_rows
        at = pc.index_in(table.column("span_id"), value_set=facts.column("span_id"))
        known = ~at.is_null().to_numpy(zero_copy_only=False)
        row = at.fill_null(0).to_numpy()
        start = (np.where(known, facts.column("start").fill_null(0).to_numpy()[row], 0) if facts.num_rows
                 else np.zeros(n, np.int64))
        seq_col = table.column("sequence_id")
        seq_null = seq_col.is_null().to_numpy(zero_copy_only=False)
        seq = seq_col.fill_null(0).to_numpy()
        group = _first_seen_codes(table.column("rollout_id"), table.column("attempt_id"))
        order = np.lexsort((np.arange(n), start, seq, seq_null, group))

        p_off, r_off = tokens.prompts.offsets.to_numpy(), tokens.responses.offsets.to_numpy()
        token_row = tokens.row[order]
        r_start = r_off[token_row]
        r_len = r_off[token_row + 1] - r_start
        r_vals = tokens.responses.values.to_numpy(zero_copy_only=False)
        if facts.num_rows:
            logprobs = _aligned_logprobs(one_array(facts.column("logprobs")), row[order], known[order], r_start,
                                         r_len, len(r_vals))
            version = pc.if_else(pa.array(known), one_array(facts.column("version")).take(pa.array(row)),
                                 pa.nulls(n, pa.string()))
        else:
            logprobs, version = np.full(len(r_vals), np.nan, np.float32), pa.nulls(n, pa.string())
        agent = _agents(table.column("metadata"))
        taken = pa.array(order)
        described = {name: one_array(table.column(name).take(taken))
                     for name in ("rollout_id", "attempt_id", "span_id", "reward")}
        described["version"] = version.take(taken)
        calls = FlatCalls(
            group=group[order], agent=value_codes(agent.take(taken))[0],
            version=value_codes(pc.fill_null(described["version"], ""))[0],
            prompt_values=tokens.prompts.values.to_numpy(zero_copy_only=False),
            prompt_start=p_off[token_row].astype(np.int64), prompt_end=p_off[token_row + 1].astype(np.int64),
            response_values=r_vals, response_start=r_start.astype(np.int64),
            response_end=(r_start + r_len).astype(np.int64), logprobs=logprobs)
        return calls, described


class _SideReads:
    """What the triplets table does not carry, read in the background: each LLM span's start time,
    model version and sampling logprobs; the final rewards; the task ids. A source whose relations
    only its own connection sees (a lake group's registered spans) answers them here instead."""

    def __init__(self, warehouse: SqlSource, rollout_ids: list[str], final_rewards: bool) -> None:
        self.warehouse = warehouse
        # as a relation: DuckDB binds a literal list of 10,000 ids ~0.15 s slower, in each query
        ids = f"SELECT rollout_id FROM ({wanted_sql(rollout_ids)})"
        from_span = ("list_transform(TRY(from_json(json(s.attributes->>'logprobs.content'), "
                     "'[{\"logprob\":\"FLOAT\"}]')), lambda e: e.logprob)")
        # The logprobs come from the stored payloads (`response_logprobs`), else DuckDB unpacks them
        # from the span's `logprobs.content` — never Python. Only the spans that need their
        # attributes (a gateway span's model version, logprobs not stored) read them: scanning the
        # attributes of every LLM span was most of this query (1M spans: ~0.5 s of 0.6 s).
        self._facts_query = f"""WITH f AS (
  SELECT s.trace_id, s.span_id, s.start_time_unix_nano AS start,
         COALESCE(s.scope_name = '{GATEWAY_SCOPE}', FALSE) AS gateway,
         p.response_logprobs AS logprobs
  FROM spans s LEFT JOIN triplet_payloads p ON p.trace_id = s.trace_id AND p.span_id = s.span_id
    AND p.version = {PAYLOAD_VERSION}
  WHERE s.rollout_id IN ({ids}) AND s.span_type = 'llm')
SELECT span_id, start, NULL::VARCHAR AS version, logprobs FROM f WHERE NOT gateway AND logprobs IS NOT NULL
UNION ALL
SELECT f.span_id, f.start, CASE WHEN f.gateway THEN s.attributes->>'{MODEL_VERSION}' END,
       COALESCE(f.logprobs, {from_span})
FROM f JOIN spans s ON s.trace_id = f.trace_id AND s.span_id = f.span_id WHERE f.gateway OR f.logprobs IS NULL"""
        self._facts_from_spans = (
            f"SELECT s.span_id, s.start_time_unix_nano AS start, CASE WHEN s.scope_name = '{GATEWAY_SCOPE}' THEN "
            f"s.attributes->>'{MODEL_VERSION}' END AS version, {from_span} AS logprobs FROM spans s "
            f"WHERE s.rollout_id IN ({ids}) AND s.span_type = 'llm'")
        # the latest reward span is the final reward (a late judge's reward included)
        self._finals_query = (f"SELECT rollout_id, arg_max(reward, (sequence_id, start_time_unix_nano)) AS r "
                              f"FROM spans WHERE rollout_id IN ({ids}) AND span_type = 'reward' GROUP BY rollout_id"
                              if final_rewards else None)
        # on the rollout span (emit.rollout), else on its gateway spans
        self._tasks_query = (
            f"SELECT rollout_id, first(attributes->>'{TASK_ID}' ORDER BY name = 'agentlightning.rollout' DESC) AS r "
            f"FROM spans WHERE rollout_id IN ({ids}) AND (name = 'agentlightning.rollout' OR scope_name = "
            f"'{GATEWAY_SCOPE}') AND attributes->>'{TASK_ID}' IS NOT NULL GROUP BY rollout_id")
        self._facts = warehouse.sql_in_background(self._facts_query)
        self._finals = warehouse.sql_in_background(self._finals_query) if self._finals_query else None
        self._tasks = warehouse.sql_in_background(self._tasks_query)

    def _answer(self, future: Future[pa.Table], query: str) -> pa.Table:
        try:
            return future.result()
        except WarehouseError:
            return self.warehouse.sql(query)

    def span_facts(self) -> pa.Table:
        try:
            return self._answer(self._facts, self._facts_query)
        except WarehouseError:  # a lake, or a file from before stored logprobs: no payload column to read
            return self.warehouse.sql(self._facts_from_spans)

    def final_rewards(self) -> dict[str, float | None]:
        if self._finals is None or self._finals_query is None:
            return {}
        return _by_rollout(self._answer(self._finals, self._finals_query))

    def task_ids(self) -> dict[str, str]:
        return _by_rollout(self._answer(self._tasks, self._tasks_query))


def _by_rollout(t: pa.Table) -> dict[str, Any]:
    return dict(zip(t.column("rollout_id").to_pylist(), t.column("r").to_pylist()))


def _aligned_logprobs(lists: pa.ListArray | None, row: np.ndarray, known: np.ndarray, r_start: np.ndarray,
                      r_len: np.ndarray, size: int) -> np.ndarray:
    """One float32 per response token id (flat, as the ids lie: call i's at r_start[i] onward): the
    call's sampling logprobs, NaN where unknown or past the end of what was recorded."""
    out = np.full(size, np.nan, np.float32)
    if lists is None or len(lists) == 0:
        return out
    values = pc.fill_null(lists.values, float("nan")).to_numpy(zero_copy_only=False).astype(np.float32)
    offsets = lists.offsets.to_numpy()
    has = known & ~lists.is_null().to_numpy(zero_copy_only=False)[row]
    src_start = offsets[row]
    take = np.where(has, np.minimum(offsets[row + 1] - src_start, r_len), 0)
    if not take.any():
        return out
    out[ranges(r_start, take)] = values[ranges(src_start, take)]
    return out


def _agents(metadata: pa.ChunkedArray) -> pa.Array:
    """The agent name in each triplet's metadata JSON, as JSON text (the merge only compares
    them): cut from the end of the object where the bulk path puts it, parsed only elsewhere (a
    triplet of the reference path)."""
    metadata = one_array(metadata)
    tail = pc.struct_field(pc.extract_regex(metadata, r'"agent_name":(?P<a>"(?:[^"\\]|\\.)*"|null)\}$'), "a")
    # elsewhere in the object, or a name with escapes (written by another encoder, maybe differently)
    odd = pc.or_kleene(tail.is_null(), pc.match_substring(tail, "\\"))
    redo = np.flatnonzero(odd.to_numpy(zero_copy_only=False))
    if len(redo) == 0:
        return tail
    texts = tail.to_pylist()
    for i in redo.tolist():
        meta = metadata[i].as_py() or "{}"
        texts[i] = orjson.dumps(orjson.loads(meta).get("agent_name") if '"agent_name"' in meta else None).decode()
    return pa.array(texts, pa.string())


def _first_seen_codes(rollouts: pa.ChunkedArray, attempts: pa.ChunkedArray) -> np.ndarray:
    """A code per (rollout, attempt) pair, numbered in the order the pairs first appear."""
    r, a = value_codes(rollouts)[0] + 1, value_codes(attempts)[0] + 1  # null (-1) is a value of its own
    key = r * (int(a.max(initial=0)) + 1) + a
    _, first_at, inverse = np.unique(key, return_index=True, return_inverse=True)
    rank = np.empty(len(first_at), np.int64)
    rank[np.argsort(first_at, kind="stable")] = np.arange(len(first_at))
    return rank[inverse.reshape(-1)]


def _stale_calls(versions: pa.Array, current_version: str | None, max_staleness: int | None) -> np.ndarray:
    """Per call: is its model version stale? Decided once per distinct version."""
    if max_staleness is None or current_version is None or len(versions) == 0:
        return np.zeros(len(versions), bool)
    encoded = pc.dictionary_encode(pc.fill_null(versions, ""))
    verdict = np.array([stale([v], current_version, max_staleness) for v in encoded.dictionary.to_pylist()], bool)
    return verdict[encoded.indices.to_numpy(zero_copy_only=False)]


def _any_in_runs(flags: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    return run_sums(flags.astype(np.int64), first, last) > 0


def _sum_in_runs(rewards: pa.Array, first: np.ndarray, last: np.ndarray) -> pa.Array:
    """Per run: the sum of its calls' rewards, null when none of them has one."""
    given = ~rewards.is_null().to_numpy(zero_copy_only=False)
    values = pc.fill_null(rewards, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
    sums = run_sums(values, first, last)
    return pa.array(sums, pa.float64(), mask=~_any_in_runs(given, first, last))


def _index_in_runs(group: np.ndarray) -> np.ndarray:
    """0, 1, 2… restarting wherever `group` changes."""
    n = len(group)
    if n == 0:
        return np.zeros(0, np.int64)
    begins = np.concatenate([[True], group[1:] != group[:-1]])
    return np.arange(n) - np.maximum.accumulate(np.where(begins, np.arange(n), 0))


def _lookup(keys: pa.Array, mapping: dict[str, Any], type_: pa.DataType) -> pa.Array:
    """mapping[key] for each key (null where absent)."""
    names = pa.array(list(mapping), pa.string())
    return pa.array(list(mapping.values()), type_).take(pc.index_in(keys, value_set=names))


def _lists(offsets: np.ndarray, values: np.ndarray, type_: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, type_))
