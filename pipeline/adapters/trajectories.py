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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from spanpipe.emit.setup import TASK_ID
from spanpipe.semconv.llm_call import GATEWAY_SCOPE
from spanpipe.warehouse.payloads import PAYLOAD_VERSION
from spanpipe.warehouse.source import WarehouseError
from spanpipe.adapters.bulk import wanted_sql
from spanpipe.adapters.triplet_types import TokenLists, one_array

if TYPE_CHECKING:
    from spanpipe.warehouse.source import SqlSource

Merge = Literal["prefix", "none"]
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
BREAK_REASONS = ("no_token_ids", "not_a_prefix", "response_retokenized", "different_agent",
                 "different_model_version")


@dataclass
class Call:
    """One LLM call as the merge sees it (token ids as int32 NumPy arrays)."""

    rollout_id: str
    attempt_id: str | None
    span_id: str
    prompt: np.ndarray
    response: np.ndarray
    logprobs: np.ndarray  # float32, NaN where unknown; as long as `response`
    reward: float | None
    agent: str | None
    model_version: str
    has_ids: bool


@dataclass
class Sample:
    """Consecutive calls merged into one sample. Each call's prompt continues the previous call's
    prompt + response, so the whole sample is the last call's prompt + response: the first
    call's prompt is the sample's prompt, the rest is the response."""

    calls: list[Call] = field(default_factory=list)

    @property
    def span_ids(self) -> list[str]:
        return [c.span_id for c in self.calls]

    @property
    def versions(self) -> list[str]:
        return [c.model_version for c in self.calls]

    @property
    def rewards(self) -> list[float | None]:
        return [c.reward for c in self.calls]

    @property
    def prompt(self) -> np.ndarray:
        return self.calls[0].prompt

    def response(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(response ids, mask, logprobs): mask 1 and the sampling logprobs on each call's own
        response tokens, mask 0 and NaN on what came between (tools, environment, user)."""
        first, last = self.calls[0], self.calls[-1]
        base = len(first.prompt)
        ids = np.concatenate([last.prompt[base:], last.response])
        mask = np.zeros(len(ids), np.int8)
        logprobs = np.full(len(ids), np.nan, np.float32)
        for c in self.calls:
            at = len(c.prompt) - base
            mask[at:at + len(c.response)] = 1
            logprobs[at:at + len(c.response)] = c.logprobs
        return ids, mask, logprobs


def first_difference(a: np.ndarray, b: np.ndarray) -> int:
    """The first index where `a` and `b` differ (the shorter length when one is a prefix)."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def merge_calls(calls: list[Call], merge: Merge) -> tuple[list[Sample], list[tuple[str, str | None, str, str, int | None]]]:
    """Samples and breaks (rollout, attempt, span, reason, position) of one attempt's calls, in
    order. The prefix test is one memcmp per call (`bytes.startswith`) on the previous call's
    prompt + response; arrays are built once per sample."""
    samples: list[Sample] = []
    breaks: list[tuple[str, str | None, str, str, int | None]] = []
    current: Sample | None = None
    previous = b""
    for call in calls:
        if not call.has_ids:
            breaks.append((call.rollout_id, call.attempt_id, call.span_id, "no_token_ids", None))
            current = None
            continue
        prompt_bytes = call.prompt.tobytes()
        if merge == "prefix" and current is not None:
            last = current.calls[-1]
            reason, position = None, None
            if call.agent != last.agent:
                reason = "different_agent"
            elif call.model_version != last.model_version:
                reason = "different_model_version"
            elif prompt_bytes.startswith(previous):
                current.calls.append(call)
                previous = prompt_bytes + call.response.tobytes()
                continue
            else:
                position = first_difference(call.prompt, np.concatenate([last.prompt, last.response]))
                reason = "response_retokenized" if position >= len(current.prompt) else "not_a_prefix"
            breaks.append((call.rollout_id, call.attempt_id, call.span_id, reason, position))
        current = Sample([call])
        samples.append(current)
        previous = prompt_bytes + call.response.tobytes()
    return samples, breaks


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
        chosen = self.triplets.triplets(rollout_ids, since=since, mode=mode)
        reasons = dict(chosen.reasons)
        table = chosen.to_arrow(token_ids=False)
        if table.num_rows == 0:
            return Trajectories(SAMPLE_SCHEMA.empty_table(), BREAK_SCHEMA.empty_table(), reasons, chosen.cursor)
        rollouts = list(dict.fromkeys(table.column("rollout_id").to_pylist()))
        # as a relation: DuckDB binds a literal list of 10,000 ids ~0.15 s slower, in each query
        ids = f"SELECT rollout_id FROM ({wanted_sql(rollouts)})"
        extra = self._span_facts(ids)
        finals = self._final_rewards(ids) if reward == "final" else {}
        tasks = self._task_ids(ids)
        groups = self._calls(table, chosen.token_lists(), extra)
        rows: dict[str, list[Any]] = {name: [] for name in SAMPLE_SCHEMA.names}
        breaks: list[tuple[str, str | None, str, str, int | None]] = []
        stale_count: dict[str, int] = {}
        for (rid, aid), calls in groups.items():
            samples, brk = merge_calls(calls, merge)
            breaks += brk
            index = 0
            for s in samples:
                if stale(s.versions, current_version, max_staleness):
                    stale_count[rid] = stale_count.get(rid, 0) + 1
                    continue
                per_turn = [r for r in s.rewards if r is not None]
                ids, mask, logprobs = s.response()
                rows["rollout_id"].append(rid)
                rows["attempt_id"].append(aid)
                rows["sample_index"].append(index)
                rows["prompt_ids"].append(s.prompt)
                rows["response_ids"].append(ids)
                rows["response_mask"].append(mask)
                rows["response_logprobs"].append(logprobs)
                rows["reward"].append(finals.get(rid) if reward == "final" else (sum(per_turn) if per_turn else None))
                rows["num_turns"].append(len(s.span_ids))
                rows["span_ids"].append(s.span_ids)
                rows["model_versions"].append(s.versions)
                rows["task_id"].append(tasks.get(rid))
                index += 1
        produced = set(rows["rollout_id"])
        for rid in rollouts:
            if rid not in produced:
                if stale_count.get(rid):
                    reasons[rid] = f"{stale_count[rid]} sample(s) left out: a model version older than " \
                                   f"{current_version} - {max_staleness}"
                else:
                    reasons[rid] = "no LLM call with token ids (see .breaks: no_token_ids)"
        out = pa.table({name: _column(rows[name], SAMPLE_SCHEMA.field(name).type) for name in SAMPLE_SCHEMA.names},
                       schema=SAMPLE_SCHEMA)
        brk_table = pa.table([pa.array([b[k] for b in breaks], BREAK_SCHEMA.field(k).type) for k in range(5)],
                             schema=BREAK_SCHEMA)
        return Trajectories(out, brk_table, reasons, chosen.cursor)

    # ---- what the triplets table does not carry ------------------------------------------------
    def _span_facts(self, ids: str) -> pa.Table:
        """span_id, start time, model version and sampling logprobs of the rollouts' LLM spans. The
        logprobs come from the stored payloads (`response_logprobs`), else DuckDB unpacks them from
        the span's `logprobs.content` — never Python."""
        from_span = ("list_transform(TRY(from_json(json(s.attributes->>'logprobs.content'), "
                     "'[{\"logprob\":\"FLOAT\"}]')), lambda e: e.logprob)")
        query = (f"SELECT s.span_id, s.start_time_unix_nano AS start, CASE WHEN s.scope_name = '{GATEWAY_SCOPE}' THEN "
                 f"s.attributes->>'{MODEL_VERSION}' END AS version, {{logprobs}} AS logprobs FROM spans s {{join}} "
                 f"WHERE s.rollout_id IN ({ids}) AND s.span_type = 'llm'")
        try:
            return self.warehouse.sql(query.format(
                logprobs=f"COALESCE(p.response_logprobs, {from_span})",
                join=f"LEFT JOIN triplet_payloads p ON p.trace_id = s.trace_id AND p.span_id = s.span_id "
                     f"AND p.version = {PAYLOAD_VERSION}"))
        except WarehouseError:  # a lake, or a file from before stored logprobs: no payload column to read
            return self.warehouse.sql(query.format(logprobs=from_span, join=""))

    def _final_rewards(self, ids: str) -> dict[str, float | None]:
        """The rollouts' final reward: their latest reward span (a late judge's reward included)."""
        t = self.warehouse.sql(f"SELECT rollout_id, arg_max(reward, (sequence_id, start_time_unix_nano)) AS r "
                               f"FROM spans WHERE rollout_id IN ({ids}) AND span_type = 'reward' GROUP BY rollout_id")
        return dict(zip(t.column("rollout_id").to_pylist(), t.column("r").to_pylist()))

    def _task_ids(self, ids: str) -> dict[str, str]:
        """Each rollout's task id: on its rollout span (emit.rollout), else on its gateway spans."""
        t = self.warehouse.sql(
            f"SELECT rollout_id, first(attributes->>'{TASK_ID}' ORDER BY name = 'agentlightning.rollout' DESC) AS task "
            f"FROM spans WHERE rollout_id IN ({ids}) AND (name = 'agentlightning.rollout' OR scope_name = "
            f"'{GATEWAY_SCOPE}') AND attributes->>'{TASK_ID}' IS NOT NULL GROUP BY rollout_id")
        return dict(zip(t.column("rollout_id").to_pylist(), t.column("task").to_pylist()))

    def _calls(self, table: pa.Table, tokens: TokenLists, facts: pa.Table) -> dict[tuple[str, str | None], list[Call]]:
        """The triplets as Calls, grouped by (rollout, attempt), each group in call order. Token ids
        and logprobs stay in flat arrays (triplet i's at row `tokens.row[i]`); a Call holds views
        into them."""
        n = table.num_rows
        at = pc.index_in(table.column("span_id"), value_set=facts.column("span_id"))
        known = ~at.is_null().to_numpy(zero_copy_only=False)
        row = at.fill_null(0).to_numpy()
        start = (np.where(known, facts.column("start").fill_null(0).to_numpy()[row], 0) if facts.num_rows
                 else np.zeros(n, np.int64))
        seq_col = table.column("sequence_id")
        seq_null = seq_col.is_null().to_numpy(zero_copy_only=False)
        seq = seq_col.fill_null(0).to_numpy()
        order = np.lexsort((np.arange(n), start, seq, seq_null))  # sequence id (nulls last), start, position

        p_vals, p_off = tokens.prompts.values.to_numpy(zero_copy_only=False), tokens.prompts.offsets.to_numpy()
        r_vals, r_off = tokens.responses.values.to_numpy(zero_copy_only=False), tokens.responses.offsets.to_numpy()
        p_start, p_end = p_off[tokens.row], p_off[tokens.row + 1]
        r_start, r_end = r_off[tokens.row], r_off[tokens.row + 1]
        logprobs = _aligned_logprobs(one_array(facts.column("logprobs")) if facts.num_rows else None,
                                     row, known, r_start, r_end - r_start, len(r_vals))
        rollouts, attempts = table.column("rollout_id").to_pylist(), table.column("attempt_id").to_pylist()
        span_ids, rewards = table.column("span_id").to_pylist(), table.column("reward").to_pylist()
        agents = _agents(table.column("metadata"))
        versions = (pc.take(facts.column("version"), pa.array(row)).to_pylist() if facts.num_rows else [None] * n)
        known_l = known.tolist()  # plain ints index faster
        p_start_l, p_end_l, r_start_l, r_end_l = p_start.tolist(), p_end.tolist(), r_start.tolist(), r_end.tolist()
        groups: dict[tuple[str, str | None], list[Call]] = {}
        for key in zip(rollouts, attempts):  # groups in the triplets' order, calls in call order
            groups.setdefault(key, [])
        for i in order.tolist():
            p0, p1, r0, r1 = p_start_l[i], p_end_l[i], r_start_l[i], r_end_l[i]
            version = versions[i] if known_l[i] else None
            groups[(rollouts[i], attempts[i])].append(Call(
                rollouts[i], attempts[i], span_ids[i], p_vals[p0:p1], r_vals[r0:r1], logprobs[r0:r1],
                rewards[i], agents[i], version or "", p1 > p0 and r1 > r0))
        return groups


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
    before = np.concatenate([[0], np.cumsum(take)[:-1]])  # entries taken for the calls before each
    within = np.arange(int(take.sum())) - np.repeat(before, take)  # 0, 1, … inside each call
    out[np.repeat(r_start, take) + within] = values[np.repeat(src_start, take) + within]
    return out


def _agents(metadata: pa.ChunkedArray) -> list[str | None]:
    """The agent name in each triplet's metadata JSON (the bulk path puts it last)."""
    tail = pc.extract_regex(metadata, r'"agent_name":(?P<a>"(?:[^"\\]|\\.)*"|null)\}$')
    found = pc.struct_field(tail, "a").to_pylist() if len(metadata) else []
    out: list[str | None] = []
    for text, meta in zip(found, metadata.to_pylist()):
        if text is None:  # elsewhere in the object (a triplet of the reference path), or absent
            out.append(orjson.loads(meta).get("agent_name") if '"agent_name"' in meta else None)
        else:
            out.append(orjson.loads(text))
    return out


def _column(values: list[Any], type_: pa.DataType) -> pa.Array:
    if pa.types.is_list(type_) and values and isinstance(values[0], np.ndarray):
        lengths = np.fromiter((len(v) for v in values), np.int64, len(values))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        flat = np.concatenate(values).astype(type_.value_type.to_pandas_dtype())
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, type_.value_type))
    return pa.array(values, type_)
