"""The warehouse schema (ARCHITECTURE.md#the-warehouse): the `spans` table and how batches go into it."""

from __future__ import annotations

from spanpipe import columns
from spanpipe.warehouse import payloads

SPANS_COLUMNS: tuple[tuple[str, str], ...] = tuple((c.name, c.sql) for c in columns.SPANS)

SCHEMA_VERSION = 1

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

DDL = [
    columns.create_table_sql("spans", columns.SPANS),
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
    LOGS_DDL,
    "CREATE TABLE IF NOT EXISTS spanpipe_meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    f"INSERT OR IGNORE INTO spanpipe_meta VALUES ('schema_version', '{SCHEMA_VERSION}')",
]

_COLS = ", ".join(name for name, _ in SPANS_COLUMNS)

# A retried export must not show twice (at-least-once in, exactly-once visible). The same span
# has the same start time, so the existence check only scans the batch's start-time range, which
# DuckDB's zone maps keep cheap however large the table grows. Duplicates inside the batch are
# removed first.
INSERT_DEDUPED = f"""
INSERT INTO spans ({_COLS})
SELECT {_COLS} FROM (
    SELECT * FROM __batch QUALIFY row_number() OVER (PARTITION BY trace_id, span_id) = 1
) AS n
WHERE NOT EXISTS (
    SELECT 1 FROM spans s
    WHERE s.start_time_unix_nano BETWEEN $lo AND $hi
      AND s.trace_id = n.trace_id AND s.span_id = n.span_id
)
"""

INSERT_REWARD_DIMENSIONS = """
INSERT INTO reward_dimensions
SELECT DISTINCT ON (trace_id, span_id, idx) trace_id, span_id, idx, name, value, source FROM __dims AS n
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

INSERT_COMPLETIONS = f"""
INSERT INTO rollout_completions
SELECT nextval('rollout_completion_seq'), {COMPLETION_COLUMNS}
FROM __batch b
WHERE b.name = '{ROLLOUT_SPAN}' AND b.rollout_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM rollout_completions c WHERE c.trace_id = b.trace_id AND c.span_id = b.span_id)
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