"""The warehouse schema (ARCHITECTURE.md#the-warehouse): the `spans` table and how batches go into it."""

from __future__ import annotations

from typing import Callable

import duckdb

from spanpipe import columns
from spanpipe.semconv.agents import agent_name_of_json_sql
from spanpipe.semconv.llm_call import INPUT_TOKEN_KEYS, OUTPUT_TOKEN_KEYS
from spanpipe.warehouse import payloads

SPANS_COLUMNS: tuple[tuple[str, str], ...] = tuple((c.name, c.sql) for c in columns.SPANS)

SCHEMA_VERSION = 1

# How each derived column is computed from the span's own columns: written with every insert, so
# that a 1M-span triplet selection reads a short column instead of every span's attributes.
DERIVED_SQL: dict[str, str] = {"agent_name": agent_name_of_json_sql("attributes", "name")}
DERIVED_NAMES = ", ".join(c.name for c in columns.DERIVED_SPANS)
DERIVED_SELECT = ", ".join(f"{DERIVED_SQL[c.name]} AS {c.name}" for c in columns.DERIVED_SPANS)

# OTLP log records (spanpipe.otlp_logs.LOGS_COLUMNS); the read side joins them to their span.
LOGS_DDL = columns.create_table_sql("logs", columns.LOGS)

# A retried logs export must not show twice: the same record has the same time, ids, name and body
# (also when the retry is merged into the same batch as the first attempt).
INSERT_LOGS = """
INSERT INTO logs
SELECT * FROM (
    SELECT * FROM __logs QUALIFY row_number() OVER (
        PARTITION BY time_unix_nano, trace_id, span_id, event_name, body::VARCHAR, attributes::VARCHAR) = 1
) AS n
WHERE NOT EXISTS (
    SELECT 1 FROM logs l
    WHERE l.time_unix_nano BETWEEN $lo AND $hi AND l.time_unix_nano = n.time_unix_nano
      AND l.trace_id IS NOT DISTINCT FROM n.trace_id AND l.span_id IS NOT DISTINCT FROM n.span_id
      AND l.event_name IS NOT DISTINCT FROM n.event_name AND l.body IS NOT DISTINCT FROM n.body
      AND l.attributes = n.attributes
)
"""



def _usage_sql(keys: tuple[str, ...], value: Callable[[str], str] = lambda k: f"attributes->>'{k}'") -> str:
    """A token count: the first of `keys` whose value (`value(key)`, SQL) is an integer."""
    return "COALESCE(" + ", ".join(f"TRY_CAST({value(k)} AS BIGINT)" for k in keys) + ")"


# Token counts of an LLM span, by the usage keys of every convention.
TOKENS_IN_SQL = _usage_sql(INPUT_TOKEN_KEYS)
TOKENS_OUT_SQL = _usage_sql(OUTPUT_TOKEN_KEYS)

# One row per rollout attempt with what the viewer's tables show, filter and sort on, kept by
# the exporter in the transaction that inserts the spans (upsert_attempt_summaries), so that a
# page never aggregates every span. Counts are added per batch when every span of the batch was
# new; a batch that repeated stored spans (a retried export) has its rollouts counted again from
# `spans` (RECOUNT_ATTEMPT_SUMMARIES). attempt_key is the attempt id, '' for none.
ATTEMPT_SUMMARIES_DDL = """CREATE TABLE IF NOT EXISTS attempt_summaries (
    rollout_id VARCHAR NOT NULL, attempt_key VARCHAR NOT NULL, attempt_id VARCHAR,
    start_time_unix_nano BIGINT, last_span_time_unix_nano BIGINT,
    spans BIGINT, llm_calls BIGINT, input_tokens BIGINT, output_tokens BIGINT,
    final_reward DOUBLE, final_reward_at STRUCT(sequence_id BIGINT, start_time_unix_nano BIGINT),
    model_version VARCHAR, model_version_at BIGINT,
    PRIMARY KEY (rollout_id, attempt_key))"""

# spanpipe_meta's key saying attempt_summaries holds every stored span (a file whose spans were
# written some other way gets it rebuilt when the collector opens it; readers fall back to `spans`).
ATTEMPT_SUMMARIES_KEPT = "attempt_summaries"

_FINAL_AT = "(sequence_id, start_time_unix_nano)::STRUCT(sequence_id BIGINT, start_time_unix_nano BIGINT)"


# What a summary reads from an LLM span's attributes, in one JSON parse (`usage[i]`): each key
# read on its own (TOKENS_IN_SQL, …) parses the text once per key, twice the cost of the summary.
_USAGE_KEYS = (*INPUT_TOKEN_KEYS, *OUTPUT_TOKEN_KEYS, "spanpipe.model_version")
_USAGE_SQL = ("CASE WHEN span_type = 'llm' THEN json_extract_string(attributes, ["
              + ", ".join(f"'$.\"{k}\"'" for k in _USAGE_KEYS) + "]) END")


def _usage_item(key: str) -> str:
    return f"usage[{_USAGE_KEYS.index(key) + 1}]"


def upsert_attempt_summaries(source: str) -> str:
    """Folds the spans of relation `source` into attempt_summaries."""
    return f"""
INSERT INTO attempt_summaries
SELECT rollout_id, COALESCE(attempt_id, ''), any_value(attempt_id), min(start_time_unix_nano),
       max(end_time_unix_nano), count(*), count(*) FILTER (WHERE span_type = 'llm'),
       sum({_usage_sql(INPUT_TOKEN_KEYS, _usage_item)}) FILTER (WHERE span_type = 'llm'),
       sum({_usage_sql(OUTPUT_TOKEN_KEYS, _usage_item)}) FILTER (WHERE span_type = 'llm'),
       arg_max(reward, {_FINAL_AT}) FILTER (WHERE span_type = 'reward'),
       max({_FINAL_AT}) FILTER (WHERE span_type = 'reward'),
       arg_max({_usage_item("spanpipe.model_version")}, start_time_unix_nano) FILTER (WHERE span_type = 'llm'),
       max(start_time_unix_nano) FILTER (WHERE span_type = 'llm')
FROM (SELECT *, {_USAGE_SQL} AS usage FROM {source} WHERE rollout_id IS NOT NULL)
GROUP BY rollout_id, COALESCE(attempt_id, '')
ON CONFLICT DO UPDATE SET
    start_time_unix_nano = least(start_time_unix_nano, excluded.start_time_unix_nano),
    last_span_time_unix_nano = greatest(last_span_time_unix_nano, excluded.last_span_time_unix_nano),
    spans = spans + excluded.spans, llm_calls = llm_calls + excluded.llm_calls,
    input_tokens = COALESCE(input_tokens + excluded.input_tokens, input_tokens, excluded.input_tokens),
    output_tokens = COALESCE(output_tokens + excluded.output_tokens, output_tokens, excluded.output_tokens),
    final_reward = CASE WHEN excluded.final_reward_at IS NOT NULL AND (final_reward_at IS NULL
                             OR excluded.final_reward_at > final_reward_at)
                        THEN excluded.final_reward ELSE final_reward END,
    final_reward_at = greatest(final_reward_at, excluded.final_reward_at),
    model_version = CASE WHEN excluded.model_version_at IS NOT NULL AND (model_version_at IS NULL
                              OR excluded.model_version_at > model_version_at)
                         THEN excluded.model_version ELSE model_version END,
    model_version_at = greatest(model_version_at, excluded.model_version_at)
"""


_BATCH_ROLLOUTS = "(SELECT DISTINCT rollout_id FROM __batch WHERE rollout_id IS NOT NULL)"
RECOUNT_ATTEMPT_SUMMARIES = [
    f"DELETE FROM attempt_summaries WHERE rollout_id IN {_BATCH_ROLLOUTS}",
    upsert_attempt_summaries(f"(SELECT * FROM spans WHERE rollout_id IN {_BATCH_ROLLOUTS})"),
]

REBUILD_ATTEMPT_SUMMARIES = [
    "DELETE FROM attempt_summaries",
    upsert_attempt_summaries("spans"),
    f"INSERT OR REPLACE INTO spanpipe_meta VALUES ('{ATTEMPT_SUMMARIES_KEPT}', 'yes')",
]

DDL = [
    columns.create_table_sql("spans", columns.SPANS + columns.DERIVED_SPANS),
    # Every reward dimension the reward processor found (the spans table keeps the primary one).
    "CREATE TABLE IF NOT EXISTS reward_dimensions (trace_id VARCHAR NOT NULL, span_id VARCHAR NOT NULL, "
    "idx INTEGER NOT NULL, name VARCHAR, value DOUBLE, source VARCHAR)",
    # One row per rollout span stored: the completion log that cursors (`since=`) and
    # `rollout_completed` events come from. `seq` orders completions as they became durable.
    "CREATE SEQUENCE IF NOT EXISTS rollout_completion_seq START 1",
    "CREATE TABLE IF NOT EXISTS rollout_completions (seq BIGINT PRIMARY KEY, rollout_id VARCHAR NOT NULL, "
    "attempt_id VARCHAR, trace_id VARCHAR, span_id VARCHAR, status VARCHAR, mode VARCHAR, final_reward DOUBLE, "
    "start_time_unix_nano BIGINT, end_time_unix_nano BIGINT)",
    payloads.DDL,
    payloads.ADD_LOGPROBS,
    LOGS_DDL,
    ATTEMPT_SUMMARIES_DDL,
    "CREATE TABLE IF NOT EXISTS spanpipe_meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    f"INSERT OR IGNORE INTO spanpipe_meta VALUES ('schema_version', '{SCHEMA_VERSION}')",
]

_COLS = ", ".join(name for name, _ in SPANS_COLUMNS)

# A retried export must not show twice (at-least-once in, exactly-once visible). The same span
# has the same start time, so the existence check only scans the batch's start-time range, which
# DuckDB's zone maps keep cheap while spans arrive near their start times. `__batch` must hold
# each span once: the exporter removes repeats first (duckdb exporter: `first_of_each_span`), in
# Arrow, where a window over the batch's wide rows cost DuckDB as much as the insert itself.
INSERT_DEDUPED = f"""
INSERT INTO spans ({_COLS}, {DERIVED_NAMES})
SELECT {_COLS}, {DERIVED_SELECT} FROM __batch AS n
WHERE NOT EXISTS (
    SELECT 1 FROM spans s
    WHERE s.start_time_unix_nano BETWEEN $lo AND $hi
      AND s.trace_id = n.trace_id AND s.span_id = n.span_id
)
"""

# A span's reward dimensions go in with the span, in one transaction (and retention removes them
# with it): when every span of a batch was new, so are its dimensions, and they go in unchecked
# (INSERT_REWARD_DIMENSIONS); only a batch that repeated stored spans (a retried export) has them
# checked against those stored (INSERT_NEW_REWARD_DIMENSIONS), which reads the whole table.
_DIMS = "SELECT DISTINCT ON (trace_id, span_id, idx) trace_id, span_id, idx, name, value, source FROM __dims AS n"
INSERT_REWARD_DIMENSIONS = f"INSERT INTO reward_dimensions {_DIMS}"
INSERT_NEW_REWARD_DIMENSIONS = f"""
INSERT INTO reward_dimensions {_DIMS}
WHERE NOT EXISTS (
    SELECT 1 FROM reward_dimensions r WHERE r.trace_id = n.trace_id AND r.span_id = n.span_id
)
"""

ROLLOUT_SPAN = "agentlightning.rollout"

# The rollout spans of the batch just inserted (not seen before) become completions; the final
# reward is the last reward span inside the rollout span's time range.
COMPLETION_COLUMNS = """b.rollout_id, b.attempt_id, b.trace_id, b.span_id,
       COALESCE(b.attributes->>'agentlightning.rollout.status',
                CASE WHEN b.status_code = 'ERROR' THEN 'failed' ELSE 'succeeded' END),
       b.attributes->>'agentlightning.rollout.mode',
       (SELECT arg_max(s.reward, (s.sequence_id, s.start_time_unix_nano)) FROM spans s
        WHERE s.start_time_unix_nano BETWEEN b.start_time_unix_nano AND b.end_time_unix_nano
          AND s.rollout_id = b.rollout_id AND s.attempt_id IS NOT DISTINCT FROM b.attempt_id
          AND s.span_type = 'reward'),
       b.start_time_unix_nano, b.end_time_unix_nano"""

# A completion row keeps its rollout span's start time, so the check for one already stored scans
# only the batch's start-time range ($lo, $hi: as INSERT_DEDUPED), which zone maps keep to the
# newest row groups; without it every batch read the whole completion log (a million completions:
# ~100 ms per batch).
INSERT_COMPLETIONS = f"""
INSERT INTO rollout_completions
SELECT nextval('rollout_completion_seq'), {COMPLETION_COLUMNS}
FROM __batch b
WHERE b.name = '{ROLLOUT_SPAN}' AND b.rollout_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM rollout_completions c
                  WHERE c.start_time_unix_nano BETWEEN $lo AND $hi
                    AND c.trace_id = b.trace_id AND c.span_id = b.span_id)
RETURNING seq, rollout_id, attempt_id, status, mode, final_reward
"""

# A reward that arrives after its rollout completed (a judge, a reward model scoring later): the
# rollout comes back once more to cursor readers, with that reward as its final reward — one more
# completion row, the reward span's ids in it. Run before INSERT_COMPLETIONS, so a rollout
# completed by this same batch is not "late".
_LATEST = "arg_max({col}, (sequence_id, start_time_unix_nano))"
INSERT_LATE_REWARDS = f"""
INSERT INTO rollout_completions
SELECT nextval('rollout_completion_seq'), c.rollout_id, c.attempt_id, r.trace_id, r.span_id, c.status, c.mode,
       r.reward, c.start_time_unix_nano, c.end_time_unix_nano
FROM (SELECT rollout_id, {_LATEST.format(col="trace_id")} AS trace_id, {_LATEST.format(col="span_id")} AS span_id,
             {_LATEST.format(col="reward")} AS reward, max(start_time_unix_nano) AS started
      FROM __batch WHERE span_type = 'reward' AND reward IS NOT NULL AND rollout_id IS NOT NULL
        AND name <> '{ROLLOUT_SPAN}'
      GROUP BY rollout_id) r
JOIN (SELECT * FROM rollout_completions
      WHERE rollout_id IN (SELECT rollout_id FROM __batch WHERE span_type = 'reward')
      QUALIFY row_number() OVER (PARTITION BY rollout_id ORDER BY seq DESC) = 1) c USING (rollout_id)
WHERE r.started >= c.end_time_unix_nano
  AND NOT EXISTS (SELECT 1 FROM rollout_completions x WHERE x.trace_id = r.trace_id AND x.span_id = r.span_id)
RETURNING seq, rollout_id, attempt_id, status, mode, final_reward
"""


def add_derived_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """A file written before a derived column existed gets it, computed for every stored span, in
    one transaction: a reader that finds the column can trust it (`views.Shapes.derived`)."""
    have = {r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'spans' AND schema_name = 'main' "
        "AND database_name = current_database()").fetchall()}
    missing = [c for c in columns.DERIVED_SPANS if c.name not in have]
    if not missing:
        return []
    con.execute("BEGIN")
    try:
        for c in missing:
            con.execute(f"ALTER TABLE spans ADD COLUMN {c.name} {c.sql}")
            value = DERIVED_SQL[c.name]
            con.execute(f"UPDATE spans SET {c.name} = {value} WHERE ({value}) IS NOT NULL")
        con.execute("COMMIT")
    except duckdb.Error:
        con.execute("ROLLBACK")
        raise
    return [c.name for c in missing]
