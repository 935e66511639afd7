"""Triplets of many rollouts in one pass: one SQL query, NumPy decisions (`forest`), payloads
joined from `triplet_payloads`, one Arrow table out.

The query returns one row per span of the wanted rollouts' chosen attempts with only what the
decisions need (numbers, flags, the rare agent name), plus — for LLM call candidates only — the
ids and the stored payload. Rows come back unordered; NumPy orders them (rollout, attempt,
sequence id, start time). A group where that order has ties (the reference path breaks them by
span id), or span ids that are not 16 hex digits, is left to the reference path like any other
group `forest.decide` is unsure of.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from spanpipe.adapters import forest
from spanpipe.adapters.triplet_types import TRIPLET_COLUMNS, TokenLists, one_array
from spanpipe.semconv.agents import AGENT_KEYS, agent_name_sql, key_pattern
from spanpipe.semconv.llm_call import RESPONSE_ID
from spanpipe.warehouse.payloads import PAYLOAD_FIELDS, PAYLOAD_VERSION, payload_columns
from spanpipe.warehouse.source import SqlSource, WarehouseError
from spanpipe.semconv.conventions.logfire import STREAM_PREFIX as LOGFIRE_STREAM_PREFIX
from spanpipe.warehouse.views import (EVERY_SHAPE, Shapes, events_with_logs_sql, is_stream_sibling_sql,
                                     llm_attributes_sql, sql_string as _q)

if TYPE_CHECKING:
    from spanpipe.adapters.triplets import TripletAdapter
    from spanpipe.warehouse.warehouse import Warehouse

log = logging.getLogger("spanpipe.adapters.bulk")

_KEYS = [*AGENT_KEYS, "agentlightning.operation.name"]
_K = {k: i + 1 for i, k in enumerate(_KEYS)}
PATHS = "[" + ", ".join("'$.\"" + k + "\"'" for k in _KEYS) + "]"
AGENT_SQL = agent_name_sql(lambda k: f"v[{_K[k]}]")


def _reward_operation_sql(name: str, operation_name: str) -> str:
    """Whether a span is Agent Lightning's reward operation, from its name and operation name."""
    return f"COALESCE({name} = 'agentlightning.operation' AND {operation_name} = 'agentlightning.reward', FALSE)"


REWARD_OPERATION_SQL = _reward_operation_sql("name", f"v[{_K['agentlightning.operation.name']}]")
# The values of `_KEYS`, parsed only from spans whose JSON text holds one of them as a quoted
# string (one regex pass is far cheaper than parsing every span's attributes).
ATTRIBUTE_KEYS_SQL = (f"CASE WHEN regexp_matches(attributes::VARCHAR, {_q(key_pattern(tuple(_KEYS)))}) "
                      f"THEN json_extract_string(attributes, {PATHS}) END")
_REWARD_OPERATION_OF_ATTRIBUTES = _reward_operation_sql(
    "s.name", "json_extract_string(s.attributes, '$.\"agentlightning.operation.name\"')")


def _response_id_of_attributes_sql(span: str) -> str:
    paths = "[" + ", ".join(f"'$.\"{k}\"'" for k in RESPONSE_ID) + "]"
    return f"list_filter(json_extract({span}.attributes, {paths}), lambda x: json_type(x) = 'VARCHAR')[1]->>'$'"


def response_id_sql(candidate: str, span: str = "s") -> str:
    """The response id of LLM-call candidates, NULL for other spans: the `response_id` column the
    reward processor fills (`semconv.llm_call.response_id`), else that rule applied here."""
    return (f"CASE WHEN NOT COALESCE({candidate}, FALSE) THEN NULL WHEN {span}.response_id IS NOT NULL "
            f"THEN {span}.response_id ELSE {_response_id_of_attributes_sql(span)} END")


def wanted_sql(rollout_ids: list[str]) -> str:
    """The rollout ids as a relation (rollout_id, k = position in the list)."""
    lit = _q(orjson.dumps(rollout_ids).decode())
    return (f"SELECT unnest(j) AS rollout_id, generate_subscripts(j, 1) - 1 AS k "
            f"FROM (SELECT from_json({lit}, '[\"VARCHAR\"]') AS j)")


def forest_query(rollout_ids: list[str], candidate_sql: str, latest_only: bool, derived: bool = False) -> str:
    # With the derived `agent_name` column (`Shapes.derived`) the query reads no attributes: reading
    # them was half of a 1M-span selection. The two facts still in attributes — a reward operation's
    # name, a response id the column lacks — are read afterwards for the few rows that need them
    # (`row_id` set: `with_attribute_facts`).
    # Attempt start and rank come from a per-attempt aggregate joined back: a window partitioned by
    # attempt over every span sorts them all (1.8 s of a 1M-span pull; the aggregate is ~0.05 s).
    # The latest attempt (latest span start; ties: the first attempt id) is chosen from that
    # aggregate too: chosen from the spans' rows, those rows were kept in memory to be read twice
    # (peak 545 MB for 1M spans, against 320 MB). The aggregate reads its spans through a
    # subquery of its own, so that DuckDB does not share one join of the spans with their
    # attributes between both (it then keeps that join in memory: 1.2 GB).
    latest = ("QUALIFY row_number() OVER (PARTITION BY k ORDER BY attempt_last DESC, attempt_id NULLS LAST) = 1"
              if latest_only else "")
    if derived:
        attribute_reads = ("s.agent_name AS agent, FALSE AS reward_operation, "
                           "CASE WHEN s.candidate THEN s.response_id END AS response_id, "
                           "CASE WHEN s.name = 'agentlightning.operation' OR (s.candidate AND s.response_id IS NULL) "
                           "THEN s.row_id END AS row_id")
    else:
        attribute_reads = (f"{ATTRIBUTE_KEYS_SQL} AS v, {AGENT_SQL} AS agent, {REWARD_OPERATION_SQL} AS reward_operation, "
                           f"{response_id_sql('s.candidate')} AS response_id, NULL::BIGINT AS row_id")
    return f"""
WITH want AS ({wanted_sql(rollout_ids)}),
att AS (
  SELECT want.k, s.attempt_id, min(s.start_time_unix_nano) AS attempt_start,
         max(s.start_time_unix_nano) AS attempt_last, dense_rank() OVER (ORDER BY s.attempt_id) AS attempt_rank
  FROM want JOIN (SELECT rollout_id, attempt_id, start_time_unix_nano FROM spans
                  WHERE rollout_id IN (SELECT rollout_id FROM want)) s ON s.rollout_id = want.rollout_id
  GROUP BY want.k, s.attempt_id),
kept AS (SELECT * FROM att {latest}),
b AS (
  SELECT s.k, hash(s.attempt_id) AS ha, s.attempt_id, s.trace_id, s.span_id,
         a.attempt_start, a.attempt_rank,
         TRY_CAST('0x' || s.span_id AS UBIGINT) AS sid, TRY_CAST('0x' || s.parent_span_id AS UBIGINT) AS psid,
         s.parent_span_id IS NOT NULL AND s.parent_span_id <> s.span_id AS has_parent,
         s.sequence_id, s.start_time_unix_nano, s.end_time_unix_nano,
         CASE WHEN s.span_type = 'reward' THEN s.reward END AS reward_value,
         s.candidate,
         {attribute_reads}
  FROM (SELECT s.*, {"s.rowid" if derived else "NULL"} AS row_id, want.k, COALESCE({candidate_sql}, FALSE) AS candidate
        FROM spans s JOIN want USING (rollout_id)) s
  JOIN kept a ON a.k = s.k AND a.attempt_id IS NOT DISTINCT FROM s.attempt_id)
SELECT b.k, b.ha, b.attempt_start, b.attempt_rank,
       b.sid, b.psid, b.has_parent, b.sid IS NULL AS odd_id, b.sequence_id,
       b.start_time_unix_nano, b.end_time_unix_nano, b.candidate, b.reward_value, b.reward_operation, b.agent,
       b.response_id, b.row_id,
       CASE WHEN b.candidate OR b.row_id IS NOT NULL THEN b.trace_id END AS trace_id,
       CASE WHEN b.candidate OR b.row_id IS NOT NULL THEN b.span_id END AS span_id,
       CASE WHEN b.candidate THEN b.attempt_id END AS attempt_id
FROM b"""


def with_attribute_facts(source: SqlSource, t: pa.Table) -> pa.Table | None:
    """`t` with `reward_operation` and `response_id` read from the attributes of the rows with a
    `row_id` (a span named `agentlightning.operation`; an LLM call candidate whose `response_id`
    column is empty). None when one of those rows is no longer at its row id (the collector
    compacted the table meanwhile): the caller selects again without the derived column."""
    need = np.flatnonzero(t.column("row_id").is_valid().to_numpy(zero_copy_only=False))
    if len(need) == 0:
        return t
    rows = [[str(r), trace, span] for r, trace, span in zip(
        t.column("row_id").take(need).to_pylist(), t.column("trace_id").take(need).to_pylist(),
        t.column("span_id").take(need).to_pylist())]
    found = [source.sql(
        f"SELECT w.i + {start} AS i, {_REWARD_OPERATION_OF_ATTRIBUTES} AS reward_operation, "
        f"{_response_id_of_attributes_sql('s')} AS response_id "
        f"FROM spans s JOIN ({_id_rows_sql(rows[start:start + _PAIRS_PER_QUERY], ('r', 'trace_id', 'span_id'))}) w "
        "ON s.rowid = w.r::BIGINT AND s.trace_id = w.trace_id AND s.span_id = w.span_id")
        for start in range(0, len(rows), _PAIRS_PER_QUERY)]
    facts = pa.concat_tables(found).sort_by("i")  # a join keeps no order; the mask below needs row order
    if facts.num_rows != len(need):
        return None
    at = need[facts.column("i").to_numpy()]
    operation = t.column("reward_operation").to_numpy(zero_copy_only=False).copy()
    operation[at] = facts.column("reward_operation").to_numpy(zero_copy_only=False)
    # a response id from the attributes for candidates only
    candidate = t.column("candidate").to_numpy(zero_copy_only=False)[at]
    mask = np.zeros(len(t), bool)
    mask[at[candidate]] = True
    response = pc.replace_with_mask(one_array(t.column("response_id")), pa.array(mask),
                                    one_array(facts.column("response_id")).filter(pa.array(candidate)))
    i = t.column_names.index
    return (t.set_column(i("reward_operation"), "reward_operation", pa.array(operation))
             .set_column(i("response_id"), "response_id", response))


def with_parent_rows(t: pa.Table) -> pa.Table:
    """`t` with `r` (its row number) and `pr` (the row of its parent: same rollout and attempt,
    span id = its parent span id; null when none). Arrow's hash join on the narrow key columns:
    in SQL, numbering the rows and joining them back cost half of a 1M-span selection. A parent
    span id found twice gives the row twice, as a SQL join would (its group is then unsure)."""
    n = t.num_rows
    rows = pa.array(np.arange(n, dtype=np.int64))
    keys = t.select(["k", "ha", "psid"]).append_column("r", rows)
    parents = t.select(["k", "ha", "sid"]).rename_columns(["k", "ha", "psid"]).append_column("pr", rows)
    pairs = keys.join(parents, keys=["k", "ha", "psid"], join_type="left outer").select(["r", "pr"])
    r = pairs.column("r").to_numpy()
    if len(r) == n:  # each row once: put the parents in row order
        at = np.empty(n, np.int64)
        at[r] = np.arange(n)
        pr = one_array(pairs.column("pr")).take(pa.array(at))
        return t.append_column("r", rows).append_column("pr", pr)
    return t.take(pa.array(r)).append_column("r", one_array(pairs.column("r"))).append_column(
        "pr", one_array(pairs.column("pr")))


# Ids sent inline in one statement: ~0.5 MB of SQL, well inside the query API's request limit.
_PAIRS_PER_QUERY = 8192


def _id_rows_sql(rows: list[list[str]], names: tuple[str, ...]) -> str:
    """(i, names…) for a list of rows of strings, i = position in the list."""
    lit = _q(orjson.dumps(rows).decode())
    fields = ", ".join(f"p[{k}] AS {name}" for k, name in enumerate(names, 1))
    return (f"SELECT i - 1 AS i, {fields} FROM (SELECT unnest(j) AS p, "
            f"generate_subscripts(j, 1) AS i FROM (SELECT from_json({lit}, '[[\"VARCHAR\"]]') AS j))")


def _pairs_sql(pairs: list[list[str]]) -> str:
    """(i, trace_id, span_id) for a list of [trace_id, span_id], i = position in the list."""
    return _id_rows_sql(pairs, ("trace_id", "span_id"))


def value_codes(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Dictionary codes (-1 for null) and the distinct values."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    codes = np.where(encoded.is_null().to_numpy(zero_copy_only=False), -1, codes).astype(np.int64)
    return codes, encoded.dictionary


def _ints(table: pa.Table, name: str, null: int) -> np.ndarray:
    return table.column(name).fill_null(null).to_numpy().astype(np.int64)


@dataclass
class BulkResult:
    table: pa.Table          # TRIPLET_COLUMNS + `_k` (position of the rollout in the request)
    decided: set[int]        # positions of rollouts fully decided here (with at least one triplet)
    # With `token_ids_only`: the token id columns, kept out of `table` until someone needs them there.
    tokens: TokenLists | None = None

    def with_token_columns(self) -> BulkResult:
        return self if self.tokens is None else BulkResult(self.tokens.into(self.table), self.decided)


def bulk_triplets(adapter: TripletAdapter, rollout_ids: list[str]) -> BulkResult:
    # The stored payloads are read meanwhile (DuckDB works outside the GIL): they do not depend on
    # the decisions, only on the rollouts.
    names = _TOKEN_NAMES if adapter.token_ids_only else _PAYLOAD_NAMES
    shapes = Shapes.of(adapter.warehouse, f"rollout_id IN (SELECT rollout_id FROM ({wanted_sql(rollout_ids)}))")
    stored = _read_stored(adapter.warehouse, rollout_ids, names, shapes)

    def select(derived: bool) -> pa.Table:
        return adapter.warehouse.sql(forest_query(rollout_ids, adapter.candidate_sql(shapes),
                                                  adapter.attempts == "latest", derived))

    t = with_attribute_facts(adapter.warehouse, select(derived=True)) if shapes.derived else None
    if t is None:  # no derived column, or a row moved meanwhile
        t = select(derived=False)
    t = with_parent_rows(t)
    n = t.num_rows
    empty = BulkResult(pa.table({c: [] for c in (*TRIPLET_COLUMNS, "_k")}), set())
    if n == 0:
        _stored(stored, names)
        return empty
    k = _ints(t, "k", -1)
    ha = t.column("ha").to_numpy().view(np.int64)
    seq = _ints(t, "sequence_id", np.iinfo(np.int64).max)  # NULLS LAST
    start, end = _ints(t, "start_time_unix_nano", 0), _ints(t, "end_time_unix_nano", 0)
    # Attempts in the order they started (ties: by attempt id), as the reference path orders them.
    attempt_start, attempt_rank = _ints(t, "attempt_start", 0), _ints(t, "attempt_rank", 0)
    order = np.lexsort((start, seq, attempt_rank, attempt_start, k))
    k, ha, seq, start, end = k[order], ha[order], seq[order], start[order], end[order]
    new_group = np.concatenate([[True], (k[1:] != k[:-1]) | (ha[1:] != ha[:-1])])
    group = np.cumsum(new_group) - 1
    tie = np.concatenate([[False], ~new_group[1:] & (seq[1:] == seq[:-1]) & (start[1:] == start[:-1])])

    r = t.column("r").to_numpy()[order]
    pr = t.column("pr").fill_null(0).to_numpy()[order]
    pos = np.full(int(r.max()) + 1, -1)
    pos[r] = np.arange(n)
    duplicate = np.bincount(r)[r] > 1
    has_pr = t.column("pr").is_null().to_numpy(zero_copy_only=False)[order] == False  # noqa: E712
    has_parent = t.column("has_parent").to_numpy(zero_copy_only=False)[order]
    parent = np.where(has_parent & has_pr, pos[pr], -1)
    odd = t.column("odd_id").to_numpy(zero_copy_only=False)[order]
    duplicate = duplicate | odd | tie  # each makes the group one for the reference path

    agent, agent_values = value_codes(t.column("agent"))
    agent_names = agent_values.to_pylist()
    response, _ = value_codes(t.column("response_id"))
    matches = None if adapter.agent_re is None else \
        np.array([bool(adapter.agent_re.search(a)) for a in agent_names] or [False])
    rows = forest.Groups(
        group=group, parent=parent, has_parent=has_parent, duplicate=duplicate, start=start, end=end,
        candidate=t.column("candidate").to_numpy(zero_copy_only=False)[order],
        reward=t.column("reward_value").to_numpy(zero_copy_only=False).astype(np.float64)[order],
        reward_operation=t.column("reward_operation").to_numpy(zero_copy_only=False)[order],
        agent=agent[order], response=response[order])
    d = forest.decide(rows, matches, adapter.exclude_llm_call_in_reward, adapter.repair_hierarchy,
                      adapter.dedup_llm_call)
    if len(d.calls) == 0:
        _stored(stored, names)
        return empty

    source = order[d.calls]  # rows of `t`
    trace_ids, span_ids = t.column("trace_id").take(source), t.column("span_id").take(source)
    read, row = _payload_rows(adapter, _stored(stored, names), trace_ids, span_ids, names, shapes)
    calls, agents = d.calls, d.agents
    if adapter.skip_empty_token_spans:
        def has(name: str) -> np.ndarray:
            return pc.fill_null(pc.list_value_length(read.column(name)), 0).to_numpy()[row] > 0
        has_tokens = has("prompt_token_ids") & has("response_token_ids")
        calls, agents, source, row = calls[has_tokens], agents[has_tokens], source[has_tokens], row[has_tokens]
        kept = pa.array(has_tokens)
        trace_ids, span_ids = trace_ids.filter(kept), span_ids.filter(kept)
    # Trajectories read the token ids where they lie (and no prompt or response); triplets get them
    # in triplet order.
    if adapter.token_ids_only:
        m = len(calls)
        tokens: TokenLists | None = TokenLists.of(read).select(row)
        payloads = pa.table({"prompt": _constant("{}", m), "response": _constant("{}", m),
                             "metadata_head": _constant("{", m)})
    else:
        tokens, payloads = None, read.take(pa.array(row))
    rewarded = np.flatnonzero(d.sure & ~np.isnan(rows.reward))
    if not adapter.match_rewards:
        got = {}
    elif adapter.reward_match == "first_occurrence":
        got = forest.match_rewards(calls, rewarded, rows.reward, start, end, group,
                                   (d.preorder, start, group))
    else:
        positions = np.arange(n)
        got = forest.match_rewards(calls[d.parent[calls] >= 0], rewarded[d.parent[rewarded] >= 0], rows.reward,
                                   start, end, d.parent, (positions, d.parent))
    reward = pa.array([got.get(c) for c in calls.tolist()], pa.float64()) if got else pa.nulls(len(calls), pa.float64())

    # each call's metadata tail, taken from one string per agent (ANY_AGENT is the last)
    tails = pa.array(['"agent_name":' + orjson.dumps(a).decode() + "}" for a in agent_names] + ['"agent_name":"*"}'],
                     pa.string())
    agent_part = tails.take(pa.array(np.where(agents == forest.ANY_AGENT, len(agent_names), agents)))
    ks = k[calls]
    out = pa.table({
        "rollout_id": pa.array(rollout_ids, pa.string()).take(ks),
        "attempt_id": t.column("attempt_id").take(source),
        "trace_id": trace_ids,
        "span_id": span_ids,
        "sequence_id": pa.array(seq[calls], pa.int64(), mask=seq[calls] == np.iinfo(np.int64).max),
        **({} if tokens is not None else {  # int32 lists, as read
            "prompt_token_ids": payloads.column("prompt_token_ids"),
            "response_token_ids": payloads.column("response_token_ids")}),
        "reward": reward,
        "prompt": payloads.column("prompt"),
        "response": payloads.column("response"),
        "metadata": pc.binary_join_element_wise(payloads.column("metadata_head"), agent_part, ""),
        "_k": pa.array(ks, pa.int64()),
    })
    # A rollout with any attempt the forest was unsure of goes whole to the reference path.
    unsure = set(k[new_group][d.unsure].tolist())
    decided = set(ks.tolist()) - unsure
    if unsure:
        sure = ~np.isin(ks, list(unsure))
        out = out.filter(pa.array(sure))
        tokens = tokens.select(sure) if tokens is not None else None
    return BulkResult(out, decided, tokens)


_PAYLOAD_NAMES = ["prompt_token_ids", "response_token_ids", "prompt", "response", "metadata_head"]
_TOKEN_NAMES = ["prompt_token_ids", "response_token_ids"]


def _constant(value: str, n: int) -> pa.Array:
    return pa.array([value], pa.string()).take(pa.array(np.zeros(n, np.int64)))


def stored_payloads_sql(rollout_ids: list[str], names: list[str] = _PAYLOAD_NAMES, shapes: Shapes = EVERY_SHAPE) -> str:
    # A payload stored from the span alone is not taken when the span has log records sent for it, or
    # is a streamed Logfire call with its answer in a sibling span: it is computed with those instead.
    wanted = f"SELECT rollout_id FROM ({wanted_sql(rollout_ids)})"
    without_logs = ("AND NOT EXISTS (SELECT 1 FROM logs l WHERE l.trace_id = tp.trace_id AND l.span_id = tp.span_id)"
                    if shapes.logs else "")
    without_streams = f"""AND (trace_id, span_id) NOT IN (
      SELECT (c.trace_id, c.span_id) FROM spans st JOIN spans c ON {is_stream_sibling_sql('c', 'st')}
      WHERE st.name LIKE '{LOGFIRE_STREAM_PREFIX}%' AND st.rollout_id IN ({wanted}))""" if shapes.streams else ""
    columns = ", ".join(f"TRY_CAST({n} AS INTEGER[]) AS {n}" if n in _TOKEN_NAMES else n for n in names)
    return f"""SELECT trace_id || '/' || span_id AS key, {columns} FROM triplet_payloads tp
WHERE version = {PAYLOAD_VERSION} AND rollout_id IN ({wanted}) {without_logs} {without_streams}"""


# A collector answers one statement with at most `query.max_result_size_mib` (256 MiB by default),
# and 10,000 rollouts of stored payloads are more: through a collector they are read this many
# rollouts at a time (~30 MB each), several statements at once.
ROLLOUTS_PER_REMOTE_READ = 1000


def _read_stored(warehouse: Warehouse, rollout_ids: list[str], names: list[str], shapes: Shapes) -> list[Future[pa.Table]]:
    n = len(rollout_ids)
    per = ROLLOUTS_PER_REMOTE_READ if warehouse.url is not None else n or 1
    return [warehouse.sql_in_background(stored_payloads_sql(rollout_ids[i:i + per], names, shapes))
            for i in range(0, n, per)]


def _stored(futures: list[Future[pa.Table]], names: list[str] = _PAYLOAD_NAMES) -> pa.Table:
    tables = []
    for future in futures:
        try:
            tables.append(future.result())
        except WarehouseError as exc:
            # A read-only file from before payloads were stored has the table only on the opening
            # connection (a temporary, empty one): every payload is computed from its span then.
            # A collector's refusal (it has the table) is worth a line: the pull gets far slower.
            log.log(logging.WARNING if exc.status else logging.DEBUG,
                    "stored payloads not read (%s): computing them from the spans", exc)
    if not tables:
        return pa.table({"key": pa.array([], pa.string()),
                         **{n: pa.array([], PAYLOAD_FIELDS[n]) for n in names}})
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _payload_rows(adapter: TripletAdapter, stored: pa.Table, trace_ids: pa.Array, span_ids: pa.Array,
                  names: list[str] = _PAYLOAD_NAMES, shapes: Shapes = EVERY_SHAPE) -> tuple[pa.Table, np.ndarray]:
    """The payload columns `names` of these LLM spans: a table and each span's row in it — as
    `stored`, or computed here from the span where none is stored (an older file, a lake, a span only
    our own llm_call_match finds), appended."""
    keys = pc.binary_join_element_wise(trace_ids, span_ids, "/")
    at = pc.index_in(keys, value_set=stored.column("key"))
    missing = np.flatnonzero(at.is_null().to_numpy(zero_copy_only=False))
    stored = stored.select(names)
    index = at.fill_null(0).to_numpy().astype(np.int64)
    if len(missing) == 0:
        return stored, index
    wanted = [[trace_ids[i].as_py(), span_ids[i].as_py()] for i in missing.tolist()]
    by_id = {}
    for start in range(0, len(wanted), _PAIRS_PER_QUERY):
        found = adapter.warehouse.sql(
            f"SELECT s.trace_id, s.span_id, {llm_attributes_sql('s', shapes)} AS attributes, "
            f"{events_with_logs_sql('s', shapes)} AS events FROM spans s "
            f"JOIN ({_pairs_sql(wanted[start:start + _PAIRS_PER_QUERY])}) w USING (trace_id, span_id)").to_pylist()
        by_id.update({(f["trace_id"], f["span_id"]): (f["attributes"], f["events"]) for f in found})
    computed = pa.table(payload_columns(by_id.get((t, s), (None, None)) for t, s in wanted)).select(names).cast(stored.schema)
    index[missing] = stored.num_rows + np.arange(len(missing))
    return pa.concat_tables([stored, computed]), index
