"""The normalised views over `spans`: `llm_calls`, `rewards`, `rollouts`, `attempts`.

`llm_calls` needs the cross-convention parsing in `spanpipe.semconv`, which is Python: it is
registered on every connection we open as two vectorised (Arrow) UDFs, `spanpipe_llm_call` and
`spanpipe_span_type`. The views themselves are stored in the database (created by the collector);
a read-only connection to an older file gets them as temporary views.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import orjson
import pyarrow as pa

from spanpipe.columns import DERIVED_SPANS
from spanpipe.semconv.agents import agent_name_sql
from spanpipe.warehouse import payloads
from spanpipe.warehouse.source import SqlSource, WarehouseError
from spanpipe.warehouse.schema import (COMPLETION_COLUMNS, DDL, DERIVED_SELECT, LOGS_DDL, ROLLOUT_SPAN, SPANS_COLUMNS,
                                       TOKENS_IN_SQL, TOKENS_OUT_SQL)
from spanpipe.semconv.llm_call import GATEWAY_SCOPE, llm_call
from spanpipe.semconv.conventions.logfire import REQUEST_KEY, STREAM_PREFIX as LOGFIRE_STREAM_PREFIX
from spanpipe.semconv.span_types import classify



@dataclass(frozen=True)
class Shapes:
    """Which of the rarer shapes the spans a query reads hold: Logfire stream spans, gateway
    spans, OTLP log records. Each costs the query a join per LLM call; a query over spans known to
    lack a shape leaves its join out (`Shapes.of`) and gives the same rows. `derived`: `spans` is
    a table with the warehouse's derived columns (`columns.DERIVED_SPANS`) and row ids — not a file
    from before them opened read-only, a lake's view or spans registered from Arrow."""
    streams: bool = True
    gateway: bool = True
    logs: bool = True
    derived: bool = False

    @classmethod
    def of(cls, source: SqlSource, spans_where: str) -> "Shapes":
        """The shapes present among the spans matching `spans_where` (one pass over them)."""
        row = source.sql(
            f"SELECT COALESCE(bool_or(name LIKE '{LOGFIRE_STREAM_PREFIX}%'), FALSE) AS streams, "
            f"COALESCE(bool_or(scope_name = '{GATEWAY_SCOPE}'), FALSE) AS gateway, "
            f"EXISTS (SELECT 1 FROM logs) AS logs FROM spans WHERE {spans_where}").to_pylist()[0]
        try:
            names = set(source.sql("SELECT rowid AS row_id, * FROM spans LIMIT 0").column_names)
        except (WarehouseError, duckdb.Error):
            names = set()
        return cls(**row, derived=all(c.name in names for c in DERIVED_SPANS))


EVERY_SHAPE = Shapes()


def events_with_logs_sql(span: str = "s", shapes: Shapes = EVERY_SHAPE) -> str:
    """The events of span alias `span` as JSON text, followed by the OTLP log records sent for it
    (same trace and span id) as events: `{time_unix_nano, name: event_name, attributes}` where the
    attributes are the record's, with its body's keys merged in (a non-object body as `content`)
    — the shape GenAI instrumentations give `gen_ai.*.message` / `gen_ai.choice` events."""
    if not shapes.logs:
        return f"{span}.events::VARCHAR"
    return f"""COALESCE((
    SELECT to_json(list_concat(CAST({span}.events AS JSON[]), list(json_object(
        'time_unix_nano', l.time_unix_nano, 'name', l.event_name,
        'attributes', json_merge_patch(COALESCE(l.attributes, '{{}}'),
                                       CASE WHEN json_type(l.body) = 'OBJECT' THEN l.body
                                            ELSE json_object('content', l.body) END))
        ORDER BY l.time_unix_nano)))::VARCHAR
    FROM logs l WHERE l.trace_id = {span}.trace_id AND l.span_id = {span}.span_id), {span}.events::VARCHAR)"""


def is_stream_sibling_sql(call: str, stream: str) -> str:
    """SQL condition: span alias `stream` is the Logfire stream sibling of span alias `call`. A
    streamed Logfire call is two spans under one parent: the call span, which ends when the stream
    is handed to the agent, and a `streaming response from …` log span written when the stream has
    been read, holding the answer. They are paired by position and time — the stream span belongs to
    the last Logfire call span that started before it — not by `request_data`, which current Logfire
    reduces to the model (so every call of one model looks the same)."""
    same_parent = (f"{{o}}.trace_id = {call}.trace_id AND {{o}}.parent_span_id IS NOT DISTINCT FROM "
                   f"{call}.parent_span_id")
    return (f"{same_parent.format(o=stream)} AND {stream}.name LIKE '{LOGFIRE_STREAM_PREFIX}%' "
            f"AND {stream}.span_id <> {call}.span_id AND {stream}.start_time_unix_nano >= {call}.start_time_unix_nano "
            f"AND json_extract({call}.attributes, '$.{REQUEST_KEY}') IS NOT NULL "
            f"AND NOT EXISTS (SELECT 1 FROM spans o WHERE {same_parent.format(o='o')} AND o.span_id <> {call}.span_id "
            f"AND o.start_time_unix_nano > {call}.start_time_unix_nano "
            f"AND o.start_time_unix_nano <= {stream}.start_time_unix_nano "
            f"AND o.name NOT LIKE '{LOGFIRE_STREAM_PREFIX}%' AND json_extract(o.attributes, '$.{REQUEST_KEY}') IS NOT NULL)")


def _stream_sibling_sql(span: str, value: str) -> str:
    """`value` (over alias `st`) of span `span`'s Logfire stream sibling; NULL when there is none."""
    return f"(SELECT first({value}) FROM spans st WHERE {is_stream_sibling_sql(span, 'st')})"


def llm_attributes_sql(span: str = "s", shapes: Shapes = EVERY_SHAPE) -> str:
    """The attributes of span alias `span` as JSON text; a streamed Logfire call gets its stream
    sibling's attributes over its own (the answer: `gen_ai.output.messages` and the response id in
    current Logfire, `response_data` in older ones), so the pair is one LLM call."""
    if not shapes.streams:
        return f"{span}.attributes::VARCHAR"
    merged = f"json_merge_patch({span}.attributes, st.attributes)::VARCHAR"
    return f"COALESCE({_stream_sibling_sql(span, merged)}, {span}.attributes::VARCHAR)"


def llm_end_sql(span: str = "s") -> str:
    """When the call of span alias `span` ended: a streamed Logfire call ends with its stream."""
    return f"GREATEST({span}.end_time_unix_nano, {_stream_sibling_sql(span, 'st.end_time_unix_nano')})"


_IS_LLM = "(span_type = 'llm' OR (span_type IS NULL AND spanpipe_span_type(name, attributes::VARCHAR) = 'llm'))"


def gateway_twin_sql(span: str = "s", shapes: Shapes = EVERY_SHAPE) -> str:
    """TRUE for a client-side span of a call the llm_gateway receiver also recorded (same response
    id in the same rollout): the gateway's span, with the token ids, stands for that call."""
    if not shapes.gateway:
        return "FALSE"
    return (f"({span}.response_id IS NOT NULL AND {span}.scope_name IS DISTINCT FROM '{GATEWAY_SCOPE}' AND EXISTS "
            f"(SELECT 1 FROM spans g WHERE g.scope_name = '{GATEWAY_SCOPE}' AND g.response_id = {span}.response_id "
            f"AND g.rollout_id IS NOT DISTINCT FROM {span}.rollout_id))")

VIEWS: dict[str, str] = {
    "llm_calls": f"""
SELECT s.trace_id, s.span_id, s.parent_span_id, s.rollout_id, s.attempt_id, s.sequence_id, s.name,
       s.start_time_unix_nano, s.call_end AS end_time_unix_nano,
       COALESCE(c->>'agent_name', {agent_name_sql(lambda k: f"p.attributes->>'{k}'", 'p.name')}) AS agent_name,
       c->>'provider' AS provider, c->>'request_model' AS request_model, c->>'response_model' AS response_model,
       COALESCE(c->>'response_id', s.response_id) AS response_id,
       NULLIF(c->'input_messages', 'null'::JSON) AS input_messages, NULLIF(c->'output_messages', 'null'::JSON) AS output_messages,
       TRY_CAST(c->>'input_tokens' AS BIGINT) AS input_tokens,
       TRY_CAST(c->>'output_tokens' AS BIGINT) AS output_tokens,
       TRY_CAST(c->'prompt_token_ids' AS INTEGER[]) AS prompt_token_ids,
       TRY_CAST(c->'response_token_ids' AS INTEGER[]) AS response_token_ids,
       NULLIF(c->'response_logprobs', 'null'::JSON) AS response_logprobs,
       c->>'convention' AS convention
FROM (SELECT *, spanpipe_llm_call({llm_attributes_sql("x")}, {events_with_logs_sql("x")})::JSON AS c,
             {llm_end_sql("x")} AS call_end
      FROM spans x WHERE {_IS_LLM} AND NOT {gateway_twin_sql("x")}) s
LEFT JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id""",
    "rewards": """
SELECT s.rollout_id, s.attempt_id, s.trace_id, s.span_id, s.sequence_id, s.name AS span_name,
       s.start_time_unix_nano, s.end_time_unix_nano, d.idx, d.name, d.value, d.source, d.idx = 0 AS is_primary
FROM reward_dimensions d JOIN spans s ON s.trace_id = d.trace_id AND s.span_id = d.span_id""",
}

_GROUPED = f"""
SELECT {{keys}},
       COALESCE(arg_max(attributes->>'agentlightning.rollout.status', end_time_unix_nano)
                    FILTER (WHERE name = 'agentlightning.rollout'), 'running') AS status,
       arg_max(attributes->>'agentlightning.rollout.mode', end_time_unix_nano)
           FILTER (WHERE name = 'agentlightning.rollout') AS mode,
       {{extra}}
       min(start_time_unix_nano) AS start_time_unix_nano,
       max(end_time_unix_nano) FILTER (WHERE name = 'agentlightning.rollout') AS end_time_unix_nano,
       max(end_time_unix_nano) AS last_span_time_unix_nano,
       count(*) AS spans,
       count(*) FILTER (WHERE span_type = 'llm') AS llm_calls,
       sum({TOKENS_IN_SQL}) FILTER (WHERE span_type = 'llm') AS input_tokens,
       sum({TOKENS_OUT_SQL}) FILTER (WHERE span_type = 'llm') AS output_tokens,
       count(*) FILTER (WHERE span_type = 'reward') AS reward_spans,
       max(end_time_unix_nano) FILTER (WHERE span_type = 'reward') AS last_reward_time_unix_nano,
       arg_max(reward, (sequence_id, start_time_unix_nano)) FILTER (WHERE span_type = 'reward') AS final_reward
FROM spans WHERE rollout_id IS NOT NULL
GROUP BY {{keys}}"""

VIEWS["rollouts"] = _GROUPED.format(keys="rollout_id", extra="count(DISTINCT attempt_id) AS attempts, "
                                    "arg_max(attempt_id, start_time_unix_nano) AS latest_attempt_id,")
VIEWS["attempts"] = _GROUPED.format(keys="rollout_id, attempt_id", extra="")


def _llm_call_udf(attributes: pa.Array, events: pa.Array) -> pa.Array:
    out = []
    for a, e in zip(attributes.to_pylist(), events.to_pylist()):
        attrs = orjson.loads(a) if a else {}
        evs = orjson.loads(e) if e else []
        out.append(orjson.dumps(llm_call(attrs, evs)).decode())
    return pa.array(out, pa.string())


def _span_type_udf(names: pa.Array, attributes: pa.Array) -> pa.Array:
    return pa.array([classify(n or "", orjson.loads(a) if a else {}) for n, a in
                     zip(names.to_pylist(), attributes.to_pylist())], pa.string())


def _reward_dimensions_udf(names: pa.Array, attributes: pa.Array, events: pa.Array) -> pa.Array:
    """Every reward dimension of a span, by the reward processor's rules (JSON list; [] for none)."""
    from spanpipe.semconv.rewards import Malformed, reward_dimensions

    out = []
    for n, a, e in zip(names.to_pylist(), attributes.to_pylist(), events.to_pylist()):
        try:
            dims = reward_dimensions(n or "", orjson.loads(a) if a else {}, orjson.loads(e) if e else None)
        except Malformed:
            dims = []
        out.append(orjson.dumps(dims).decode())
    return pa.array(out, pa.string())


def register_functions(con: duckdb.DuckDBPyConnection) -> None:
    for name, fn, params in (("spanpipe_llm_call", _llm_call_udf, ["VARCHAR", "VARCHAR"]),
                             ("spanpipe_span_type", _span_type_udf, ["VARCHAR", "VARCHAR"]),
                             ("spanpipe_reward_dimensions", _reward_dimensions_udf, ["VARCHAR", "VARCHAR", "VARCHAR"])):
        try:
            con.create_function(name, fn, params, "VARCHAR", type="arrow", side_effects=False)
        except (duckdb.NotImplementedException, duckdb.CatalogException):
            pass  # already registered on this connection (or on the database, for a cursor)


def create_views(con: duckdb.DuckDBPyConnection, temporary: bool = False) -> None:
    # A library must not draw DuckDB's progress bar on the caller's terminal during long queries.
    con.execute("SET enable_progress_bar = false")
    register_functions(con)
    existing = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    for name, ddl in (("triplet_payloads", payloads.DDL), ("logs", LOGS_DDL)):
        if name not in tables:  # a file from before these tables existed, or a lake: empty ones
            con.execute(ddl.replace("CREATE TABLE", "CREATE TEMP TABLE" if temporary else "CREATE TABLE"))
    for name, sql in VIEWS.items():
        if temporary and name in existing:
            continue
        con.execute(f"CREATE OR REPLACE {'TEMP ' if temporary else ''}VIEW {name} AS {sql}")


def create_lake_views(con: duckdb.DuckDBPyConnection, location: str) -> None:
    """The warehouse's tables as views over a Parquet lake, then the usual views on top.

    The lake holds spans only: `reward_dimensions` is read from each reward span's attributes by the
    reward processor's rules (every dimension, as the warehouse keeps them), and
    `rollout_completions` is derived from the rollout spans and late reward spans, ordered by time
    (a cursor into a lake is stable while the lake only grows in time order)."""
    from spanpipe.lake import lake_glob

    pattern = lake_glob(location)
    has_files = con.execute("SELECT count(*) FROM glob(?)", [pattern]).fetchall()[0][0] > 0
    if has_files:
        cols = ", ".join(name for name, _ in SPANS_COLUMNS)
        con.execute(f"CREATE VIEW spans AS SELECT {cols}, {DERIVED_SELECT} FROM read_parquet({sql_string(pattern)}, "
                    "hive_partitioning = true, union_by_name = true)")
    else:
        con.execute(DDL[0])
    create_views_over_spans(con)


def create_views_over_spans(con: duckdb.DuckDBPyConnection) -> None:
    """Everything a lake reader needs on top of a `spans` view that already exists (over Parquet
    files, or over an Arrow table of some rollouts' spans on a Ray worker)."""
    register_functions(con)
    con.execute("""CREATE VIEW reward_dimensions AS
SELECT trace_id, span_id, CAST(d.idx - 1 AS INTEGER) AS idx, d.dim->>'name' AS name,
       CAST(d.dim->>'value' AS DOUBLE) AS value, d.dim->>'source' AS source
FROM (SELECT trace_id, span_id, unnest(dims) AS dim, generate_subscripts(dims, 1) AS idx
      FROM (SELECT trace_id, span_id, CAST(spanpipe_reward_dimensions(name, attributes::VARCHAR, events::VARCHAR)
                                           AS JSON[]) AS dims
            FROM spans WHERE reward IS NOT NULL)) d""")
    # As the warehouse logs them: one record per stored rollout span, and one per reward that
    # started after its rollout's latest completion (a late reward: the rollout comes back to
    # cursor readers with that reward as its final one), ordered by when each happened.
    con.execute(f"""CREATE VIEW rollout_completions (seq, rollout_id, attempt_id, trace_id, span_id, status, mode,
                                                final_reward, start_time_unix_nano, end_time_unix_nano) AS
WITH done AS (
    SELECT * FROM (SELECT b.end_time_unix_nano, b.span_id, {COMPLETION_COLUMNS} FROM spans b
                   WHERE b.name = '{ROLLOUT_SPAN}' AND b.rollout_id IS NOT NULL)
        AS d(happened, tie, rollout_id, attempt_id, trace_id, span_id, status, mode, final_reward,
             start_time_unix_nano, end_time_unix_nano)),
late AS (
    SELECT r.start_time_unix_nano AS happened, r.span_id AS tie, d.rollout_id, d.attempt_id, r.trace_id, r.span_id,
           d.status, d.mode, r.reward AS final_reward, d.start_time_unix_nano, d.end_time_unix_nano
    FROM spans r JOIN done d ON d.rollout_id = r.rollout_id AND d.attempt_id IS NOT DISTINCT FROM r.attempt_id
                            AND r.start_time_unix_nano >= d.end_time_unix_nano
    WHERE r.span_type = 'reward' AND r.reward IS NOT NULL AND r.name <> '{ROLLOUT_SPAN}'
    QUALIFY row_number() OVER (PARTITION BY r.trace_id, r.span_id ORDER BY d.end_time_unix_nano DESC) = 1)
SELECT row_number() OVER (ORDER BY happened, tie) AS seq, rollout_id, attempt_id, trace_id, span_id, status, mode,
       final_reward, start_time_unix_nano, end_time_unix_nano
FROM (SELECT * FROM done UNION ALL SELECT * FROM late)""")
    create_views(con)


def sql_string(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"
