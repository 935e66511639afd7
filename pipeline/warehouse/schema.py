"""The warehouse schema (DESIGN §4 and §7): the `spans` table and how batches go into it."""

from __future__ import annotations

SPANS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("trace_id", "VARCHAR NOT NULL"),
    ("span_id", "VARCHAR NOT NULL"),
    ("parent_span_id", "VARCHAR"),
    ("trace_state", "VARCHAR"),
    ("name", "VARCHAR"),
    ("kind", "VARCHAR"),
    ("start_time_unix_nano", "BIGINT"),
    ("end_time_unix_nano", "BIGINT"),
    ("duration_ns", "BIGINT"),
    ("status_code", "VARCHAR"),
    ("status_message", "VARCHAR"),
    ("service_name", "VARCHAR"),
    ("scope_name", "VARCHAR"),
    ("scope_version", "VARCHAR"),
    ("attributes", "JSON"),
    ("resource_attributes", "JSON"),
    ("events", "JSON"),
    ("links", "JSON"),
    ("rollout_id", "VARCHAR"),
    ("attempt_id", "VARCHAR"),
    ("sequence_id", "BIGINT"),
    ("span_type", "VARCHAR"),
    ("reward", "DOUBLE"),
    ("response_id", "VARCHAR"),
)

SCHEMA_VERSION = 1

DDL = [
    "CREATE TABLE IF NOT EXISTS spans (\n  "
    + ",\n  ".join(f"{name} {typ}" for name, typ in SPANS_COLUMNS)
    + "\n)",
    # Every reward dimension the reward processor found (the spans table keeps the primary one).
    "CREATE TABLE IF NOT EXISTS reward_dimensions (trace_id VARCHAR NOT NULL, span_id VARCHAR NOT NULL, "
    "idx INTEGER NOT NULL, name VARCHAR, value DOUBLE, source VARCHAR)",
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
