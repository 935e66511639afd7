"""What each page of the web viewer shows, read from the warehouse: plain dicts ready for JSON.

The SQL here is ours, never the browser's: values from the page (filters, ids) are bound as
parameters, and sort keys are looked up in a fixed table. Every function takes a read-only DuckDB
cursor over the warehouse (a collector's, a file's or a lake's). Times leave as milliseconds since
the epoch (a JavaScript number holds them exactly; nanoseconds it would round).

The rollouts page is paged on the server and must stay fast on a million spans while the
collector ingests: it reads `attempt_summaries` (one row per attempt, kept by the exporter) and
the small `rollout_completions` log. Over a lake or a file without kept summaries it aggregates
plain columns over all spans and parses attributes (token counts) only for the page's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from spanpipe.adapters.trajectories import MODEL_VERSION
from spanpipe.adapters.tree import Tree
from spanpipe.adapters.span_columns import SpanColumns
from spanpipe.adapters.triplets import TripletAdapter
from spanpipe.semconv.llm_call import GATEWAY_SCOPE, TOKEN_IDS_MISSING_REASON, llm_call, token_ids
from spanpipe.warehouse.schema import ATTEMPT_SUMMARIES_KEPT
from spanpipe.warehouse.views import TOKENS_IN_SQL, TOKENS_OUT_SQL
from spanpipe.warehouse.warehouse import Warehouse

MS = 1_000_000


def rows(cur: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | list[Any] | None = None) -> list[dict[str, Any]]:
    result = cur.execute(sql, params or {})
    names = [d[0] for d in result.description]
    return [dict(zip(names, r)) for r in result.fetchall()]


def to_ms(ns: int | None) -> float | None:
    return None if ns is None else ns / MS


# ---- overview -------------------------------------------------------------------------------

def overview(cur: duckdb.DuckDBPyConnection, points: int = 2000, minutes: int = 120,
             coverage_rollouts: int = 200, coverage_memo: Coverage | None = None) -> dict[str, Any]:
    """Completions per minute, the final reward of the latest completed rollouts (with mode and
    model version, for one series each), rollouts by status, and the share of LLM calls with token
    ids in the latest `coverage_rollouts` completed rollouts (read as the triplet adapter reads them)."""
    kept = summaries_kept(cur)
    model_version = (
        "(SELECT arg_max(a.model_version, a.model_version_at) FROM attempt_summaries a WHERE a.rollout_id = l.rollout_id)"
        if kept else
        f"""(SELECT arg_max(CASE WHEN s.span_type = 'llm' THEN s.attributes->>'{MODEL_VERSION}' END,
                            s.start_time_unix_nano) FILTER (WHERE s.span_type = 'llm')
             FROM spans s WHERE s.rollout_id = l.rollout_id)""")
    done = rows(cur, f"""
        WITH last AS (SELECT * FROM rollout_completions ORDER BY seq DESC LIMIT {int(points)})
        SELECT l.rollout_id, l.status, l.mode, l.final_reward, l.end_time_unix_nano, {model_version} AS model_version
        FROM last l ORDER BY l.end_time_unix_nano""")
    per_minute = rows(cur, f"""
        SELECT (end_time_unix_nano // {60_000 * MS}) * 60000 AS minute, count(*) AS completed
        FROM rollout_completions GROUP BY 1 ORDER BY 1 DESC LIMIT {int(minutes)}""")
    rollout_ids = ("SELECT DISTINCT rollout_id FROM attempt_summaries" if kept else
                   "SELECT DISTINCT rollout_id FROM spans WHERE rollout_id IS NOT NULL")
    status = rows(cur, f"""
        SELECT COALESCE(l.status, 'running') AS status, count(*) AS rollouts
        FROM ({rollout_ids}) r LEFT JOIN ({_COMPLETIONS_SQL}) l USING (rollout_id) GROUP BY 1 ORDER BY 1""")
    with_ids, calls = token_id_coverage(cur, coverage_rollouts, kept, coverage_memo)
    return {
        "rewards": [{"rollout_id": d["rollout_id"], "status": d["status"], "mode": d["mode"] or "train",
                     "model_version": d["model_version"] or "", "reward": d["final_reward"],
                     "time": to_ms(d["end_time_unix_nano"])} for d in done],
        "completed_per_minute": [{"minute": m["minute"], "completed": m["completed"]} for m in reversed(per_minute)],
        "rollouts_by_status": {s["status"]: s["rollouts"] for s in status},
        "token_ids": {"rollouts": coverage_rollouts, "llm_calls": calls, "with_token_ids": with_ids},
    }


Coverage = dict[str, tuple[int, int, int]]  # rollout id -> (its LLM calls, calls with token ids, calls)


def token_id_coverage(cur: duckdb.DuckDBPyConnection, latest_rollouts: int, kept: bool,
                      memo: Coverage | None = None) -> tuple[int, int]:
    """(LLM calls with prompt and response token ids, LLM calls) in the latest completed rollouts;
    a client span whose call the gateway also recorded in its rollout counts once (the gateway's).
    With kept summaries, `memo` keeps each rollout's figures until its number of LLM spans changes."""
    latest = f"SELECT rollout_id FROM rollout_completions ORDER BY seq DESC LIMIT {int(latest_rollouts)}"
    memo = {} if memo is None or not kept else memo
    if kept:
        llm_spans = {r["rollout_id"]: r["n"] for r in rows(
            cur, f"SELECT rollout_id, sum(llm_calls)::BIGINT AS n FROM attempt_summaries "
                 f"WHERE rollout_id IN ({latest}) GROUP BY rollout_id")}
        for rid in [r for r in memo if r not in llm_spans]:
            memo.pop(rid, None)
        todo = [r for r, n in llm_spans.items() if r not in memo or memo[r][0] != n]
        where = "rollout_id IN (SELECT unnest($ids))"
        params: dict[str, Any] = {"ids": todo}
    else:
        llm_spans, todo, where, params = {}, [], f"rollout_id IN ({latest})", {}
    if kept and not todo:
        spans: list[dict[str, Any]] = []
    else:
        spans = rows(cur, f"""
            SELECT rollout_id, scope_name = '{GATEWAY_SCOPE}' AS gateway, response_id, attributes::VARCHAR AS attributes
            FROM spans WHERE span_type = 'llm' AND {where}""", params)
    recorded = {(s["rollout_id"], s["response_id"]) for s in spans if s["gateway"] and s["response_id"]}
    fresh: dict[str, list[int]] = {r: [0, 0] for r in todo}
    for s in spans:
        if not s["gateway"] and (s["rollout_id"], s["response_id"]) in recorded:
            continue
        prompt_ids, response_ids = token_ids(orjson.loads(s["attributes"]) if s["attributes"] else {})[:2]
        counts = fresh.setdefault(s["rollout_id"], [0, 0])
        counts[0] += bool(prompt_ids) and bool(response_ids)
        counts[1] += 1
    for rid, (with_ids, calls) in fresh.items():
        memo[rid] = (llm_spans.get(rid, 0), with_ids, calls)
    return sum(m[1] for m in memo.values()), sum(m[2] for m in memo.values())


# ---- the rollouts table ---------------------------------------------------------------------

SORT_KEYS = {"rollout_id": "rollout_id", "status": "status", "attempts": "attempts", "final_reward": "final_reward",
             "llm_calls": "llm_calls", "duration": "duration_ns", "last_span_time": "last_span_time_unix_nano",
             "start_time": "start_time_unix_nano", "tokens": "tokens"}
STATUSES = ("running", "succeeded", "failed")
MODES = ("train", "val", "test")


@dataclass
class RolloutFilter:
    status: str | None = None
    mode: str | None = None
    id_contains: str | None = None
    since_ms: float | None = None  # last span at or after
    until_ms: float | None = None  # started at or before
    sort: str = "last_span_time"
    descending: bool = True
    page: int = 0
    size: int = 50

    def validate(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if self.sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}")
        if not 1 <= self.size <= 500 or self.page < 0:
            raise ValueError("size must be 1..500 and page ≥ 0")


def _tokens_sql(where: str) -> str:
    return (f"SELECT rollout_id, sum({TOKENS_IN_SQL}) AS input_tokens, sum({TOKENS_OUT_SQL}) AS output_tokens "
            f"FROM spans WHERE span_type = 'llm' AND {where} GROUP BY rollout_id")


_COMPLETIONS_SQL = """SELECT rollout_id, arg_max(status, seq) AS status, arg_max(mode, seq) AS mode,
                             arg_max(end_time_unix_nano, seq) AS end_time_unix_nano
                      FROM rollout_completions GROUP BY rollout_id"""


def summaries_kept(cur: duckdb.DuckDBPyConnection) -> bool:
    """Whether the warehouse keeps `attempt_summaries` up to date (a collector's file does; a
    lake, or a file written some other way, is aggregated from its spans)."""
    return (bool(rows(cur, "SELECT 1 AS meta FROM duckdb_tables() WHERE table_name = 'spanpipe_meta'"))
            and bool(rows(cur, "SELECT 1 AS kept FROM spanpipe_meta WHERE key = $k", {"k": ATTEMPT_SUMMARIES_KEPT})))


def rollout_summaries(cur: duckdb.DuckDBPyConnection, with_tokens: bool = False) -> pa.Table:
    """One row per rollout with what the table shows, filters and sorts on: from `attempt_summaries`
    when the warehouse keeps it (milliseconds), else aggregated over every span — without token
    counts unless `with_tokens`, which reads every LLM call's attributes (seconds on a million spans)."""
    if summaries_kept(cur):
        return cur.sql(f"""
            WITH agg AS (
                SELECT rollout_id, count(attempt_id) AS attempts, min(start_time_unix_nano) AS start_time_unix_nano,
                       max(last_span_time_unix_nano) AS last_span_time_unix_nano,
                       sum(spans)::BIGINT AS spans, sum(llm_calls)::BIGINT AS llm_calls,
                       sum(input_tokens)::BIGINT AS input_tokens, sum(output_tokens)::BIGINT AS output_tokens,
                       arg_max(final_reward, final_reward_at) AS final_reward
                FROM attempt_summaries GROUP BY rollout_id)
            SELECT agg.*, COALESCE(done.status, 'running') AS status, done.mode,
                   done.end_time_unix_nano - agg.start_time_unix_nano AS duration_ns,
                   (COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0))::HUGEINT AS tokens
            FROM agg LEFT JOIN ({_COMPLETIONS_SQL}) done USING (rollout_id)""").to_arrow_table()
    tokens_join = (f"LEFT JOIN ({_tokens_sql('rollout_id IS NOT NULL')}) t USING (rollout_id)"
                   if with_tokens else "")
    tokens_col = "COALESCE(t.input_tokens, 0) + COALESCE(t.output_tokens, 0)" if with_tokens else "NULL::HUGEINT"
    return cur.sql(f"""
        WITH agg AS (
            SELECT rollout_id, count(DISTINCT attempt_id) AS attempts, min(start_time_unix_nano) AS start_time_unix_nano,
                   max(end_time_unix_nano) AS last_span_time_unix_nano, count(*) AS spans,
                   count(*) FILTER (WHERE span_type = 'llm') AS llm_calls,
                   arg_max(reward, (sequence_id, start_time_unix_nano)) FILTER (WHERE span_type = 'reward') AS final_reward
            FROM spans WHERE rollout_id IS NOT NULL GROUP BY rollout_id)
        SELECT agg.*, COALESCE(done.status, 'running') AS status, done.mode,
               done.end_time_unix_nano - agg.start_time_unix_nano AS duration_ns, {tokens_col} AS tokens
        FROM agg LEFT JOIN ({_COMPLETIONS_SQL}) done USING (rollout_id) {tokens_join}""").to_arrow_table()


def rollouts_page(cur: duckdb.DuckDBPyConnection, f: RolloutFilter, summaries: pa.Table | None = None) -> dict[str, Any]:
    """A page of the rollouts table, from `summaries` (rollout_summaries, possibly a few seconds
    old: see routes.Refreshed) or read now. Without kept summaries, token counts are read for the
    page's rows only (or for all, to sort by them)."""
    f.validate()
    if summaries is None or (f.sort == "tokens" and "input_tokens" not in summaries.column_names):
        summaries = rollout_summaries(cur, with_tokens=f.sort == "tokens")
    where, params = ["TRUE"], {}
    for cond, key, value in (("contains(rollout_id, $id)", "id", f.id_contains), ("status = $status", "status", f.status),
                             ("mode = $mode", "mode", f.mode),
                             ("last_span_time_unix_nano >= $since", "since", None if f.since_ms is None else int(f.since_ms * MS)),
                             ("start_time_unix_nano <= $until", "until", None if f.until_ms is None else int(f.until_ms * MS))):
        if value is not None:
            where.append(cond)
            params[key] = value
    order = f"{SORT_KEYS[f.sort]} {'DESC' if f.descending else 'ASC'} NULLS LAST, rollout_id"
    name = f"__rollout_summaries_{id(summaries)}"
    cur.register(name, summaries)
    try:
        page = rows(cur, f"""
            SELECT *, count(*) OVER () AS total FROM {name} WHERE {' AND '.join(where)}
            ORDER BY {order} LIMIT {int(f.size)} OFFSET {int(f.page) * int(f.size)}""", params)
        total = page[0]["total"] if page else rows(
            cur, f"SELECT count(*) AS n FROM {name} WHERE {' AND '.join(where)}", params)[0]["n"]
    finally:
        cur.unregister(name)
    ids = [r["rollout_id"] for r in page]
    tokens = {}
    if ids and "input_tokens" not in summaries.column_names:
        tokens = {t["rollout_id"]: t for t in rows(cur, _tokens_sql("rollout_id IN (SELECT unnest($ids))"),
                                                    {"ids": ids})}
    out = []
    for r in page:
        t = tokens.get(r["rollout_id"], r)
        out.append({"rollout_id": r["rollout_id"], "status": r["status"], "mode": r["mode"], "attempts": r["attempts"],
                    "final_reward": r["final_reward"], "llm_calls": r["llm_calls"], "spans": r["spans"],
                    "input_tokens": t.get("input_tokens"), "output_tokens": t.get("output_tokens"),
                    "start_time": to_ms(r["start_time_unix_nano"]), "duration_ms": to_ms(r["duration_ns"]),
                    "last_span_time": to_ms(r["last_span_time_unix_nano"])})
    return {"total": total, "page": f.page, "size": f.size, "rows": out}


# ---- one rollout ----------------------------------------------------------------------------

def rollout(cur: duckdb.DuckDBPyConnection, rollout_id: str, attempt_id: str | None,
            adapter_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """One rollout: its attempts, the chosen attempt's span tree (repaired as the triplet adapter
    repairs it, virtual nodes marked), LLM calls with messages, rewards, the adapter's triplets and
    which call each reward went to — or why there are no triplets."""
    attempts = rows(cur, """
        SELECT attempt_id, min(start_time_unix_nano) AS start_ns, max(end_time_unix_nano) AS end_ns, count(*) AS spans
        FROM spans WHERE rollout_id = $rid GROUP BY attempt_id ORDER BY start_ns""", {"rid": rollout_id})
    if not attempts:
        return None
    chosen = attempt_id if any(a["attempt_id"] == attempt_id for a in attempts) else attempts[-1]["attempt_id"]
    completion = rows(cur, """
        SELECT status, mode, final_reward, end_time_unix_nano FROM rollout_completions
        WHERE rollout_id = $rid ORDER BY seq DESC LIMIT 1""", {"rid": rollout_id})
    spans = rows(cur, """
        SELECT trace_id, span_id, parent_span_id, name, kind, start_time_unix_nano, end_time_unix_nano, status_code,
               status_message, span_type, reward, sequence_id, service_name, scope_name, attributes::VARCHAR AS attributes
        FROM spans WHERE rollout_id = $rid AND attempt_id IS NOT DISTINCT FROM $aid
        ORDER BY sequence_id NULLS LAST, start_time_unix_nano, span_id""", {"rid": rollout_id, "aid": chosen})
    rewards = rows(cur, """
        SELECT span_id, span_name, idx, name, value, source, is_primary, start_time_unix_nano FROM rewards
        WHERE rollout_id = $rid AND attempt_id IS NOT DISTINCT FROM $aid ORDER BY start_time_unix_nano, idx""",
                   {"rid": rollout_id, "aid": chosen})
    adapter = TripletAdapter(Warehouse(con=cur), **(adapter_options or {}))
    decision = next((d for d in adapter.explain(rollout_id) if d.attempt_id == chosen), None)
    return {
        "rollout_id": rollout_id,
        "attempt_id": chosen,
        "attempts": [{"attempt_id": a["attempt_id"], "start_time": to_ms(a["start_ns"]), "spans": a["spans"]}
                     for a in attempts],
        "status": completion[0]["status"] if completion else "running",
        "mode": completion[0]["mode"] if completion else None,
        "final_reward": completion[0]["final_reward"] if completion else None,
        "spans": span_tree(spans),
        "llm_calls": [] if decision is None else calls_of(decision.spans),
        "rewards": [{"span_id": r["span_id"], "span_name": r["span_name"], "dimension": r["name"], "value": r["value"],
                     "source": r["source"], "primary": r["is_primary"], "time": to_ms(r["start_time_unix_nano"])}
                    for r in rewards],
        "triplets": [] if decision is None else [
            {"span_id": t.span_id, "reward": t.reward, "prompt_token_ids": len(t.prompt.get("token_ids") or []),
             "response_token_ids": len(t.response.get("token_ids") or []),
             "token_ids_missing_reason": t.metadata.get(TOKEN_IDS_MISSING_REASON)} for t in decision.triplets],
        "reward_links": [] if decision is None else [
            {"reward_span_id": link.reward_span_id, "value": link.value, "call_span_id": link.call_span_id,
             "why": link.why} for link in decision.reward_links],
        "why_no_triplets": None if decision is None or decision.triplets else decision.why_none,
    }


def calls_of(spans: SpanColumns) -> list[dict[str, Any]]:
    """The LLM calls among one attempt's spans as the triplet adapter sees them (its candidates,
    gateway twins left out, a Logfire stream merged into its call), read by the conventions."""
    out = []
    for i, is_call in enumerate(spans.candidate or []):
        if not is_call:
            continue
        attrs = orjson.loads(spans.attributes[i]) if spans.attributes[i] else {}
        c = llm_call(attrs, orjson.loads(spans.events[i]) if spans.events[i] else None)
        prompt_ids, response_ids = c["prompt_token_ids"] or [], c["response_token_ids"] or []
        out.append({"span_id": spans.span_id[i], "name": spans.name[i], "agent_name": spans.agent_name[i],
                    "provider": c["provider"], "model": c["response_model"] or c["request_model"],
                    "response_id": spans.response_id[i] or c["response_id"], "convention": c["convention"],
                    "input_messages": c["input_messages"] or [], "output_messages": c["output_messages"] or [],
                    "input_tokens": c["input_tokens"], "output_tokens": c["output_tokens"],
                    "prompt_token_ids": len(prompt_ids), "response_token_ids": len(response_ids),
                    "has_logprobs": c["response_logprobs"] is not None,
                    "token_ids_missing_reason": attrs.get(TOKEN_IDS_MISSING_REASON),
                    "start_time": to_ms(spans.start[i]), "end_time": to_ms(spans.end[i])})
    return out


def span_tree(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spans in depth-first order of the repaired tree, each with its depth, the parent it was
    stored with and the one the repair gave it; parents that were never stored appear as virtual nodes."""
    if not spans:
        return []
    tree = Tree.build([s["span_id"] for s in spans], [s["parent_span_id"] for s in spans],
                      [s["start_time_unix_nano"] or 0 for s in spans], [s["end_time_unix_nano"] or 0 for s in spans])
    tree.repair()
    parent = tree.parents()
    depth = {tree.root: 0}
    out = []
    for i in tree.dfs():
        if i != tree.root:
            depth[i] = depth[parent[i]] + 1
        real = i < len(spans)
        node: dict[str, Any] = {
            "span_id": tree.span_ids[i], "depth": depth[i], "virtual": not real,
            "parent_span_id": tree.span_ids[parent[i]] if parent[i] >= 0 else None,
            "start_time": to_ms(tree.start[i]), "end_time": to_ms(tree.end[i])}
        if real:
            s = spans[i]
            node.update(name=s["name"], kind=s["kind"], status_code=s["status_code"], status_message=s["status_message"],
                        span_type=s["span_type"], reward=s["reward"], trace_id=s["trace_id"],
                        stored_parent_span_id=s["parent_span_id"], service_name=s["service_name"],
                        attributes=shorten(orjson.loads(s["attributes"])) if s["attributes"] else {})
        else:
            node["name"] = "(virtual root)" if tree.span_ids[i] == "virtual-root" else "(parent never stored)"
        out.append(node)
    return out



def shorten(value: Any, items: int = 16, chars: int = 2000) -> Any:
    """Attribute values cut for reading (token-id lists run to thousands of numbers); the cut says so."""
    if isinstance(value, dict):
        return {k: shorten(v, items, chars) for k, v in value.items()}
    if isinstance(value, list):
        head = [shorten(v, items, chars) for v in value[:items]]
        return head + [f"… {len(value) - items} more"] if len(value) > items else head
    if isinstance(value, str) and len(value) > chars:
        return value[:chars] + f"… ({len(value) - chars} more characters)"
    return value
