"""Retention for the warehouse: delete the oldest whole rollouts, optionally archiving them first.

The unit is a rollout (`rollout_id`), or the trace for spans outside any rollout, so a triplet
is never cut in half. `max_age` removes units whose last span ended longer ago than that;
`max_rows` keeps the newest units (by first span start) that fit in that many spans. With an
archive, the spans go to the Parquet lake first; they are deleted only once the files exist.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import duckdb
import pyarrow.fs as pafs

from spanpipe import lake

_UNITS = """
CREATE OR REPLACE TEMP TABLE __doomed AS
WITH units AS (
    SELECT COALESCE(rollout_id, 'trace:' || trace_id) AS unit, min(start_time_unix_nano) AS first_start,
           max(end_time_unix_nano) AS last_end, count(*) AS n
    FROM spans GROUP BY 1
), ranked AS (
    SELECT *, sum(n) OVER (ORDER BY first_start DESC, unit ROWS UNBOUNDED PRECEDING) AS newer_rows FROM units
)
SELECT unit FROM ranked
WHERE ($cutoff IS NOT NULL AND last_end < $cutoff) OR ($max_rows IS NOT NULL AND newer_rows > $max_rows)
"""

_DOOMED_SPANS = "FROM spans WHERE COALESCE(rollout_id, 'trace:' || trace_id) IN (SELECT unit FROM __doomed)"


@dataclass
class Archive:
    fs: pafs.FileSystem
    root: str
    partition_by: list[str]


def apply_retention(con: duckdb.DuckDBPyConnection, max_age_s: float, max_rows: int,
                    archive: Archive | None) -> tuple[int, int]:
    """Returns (rollouts or traces removed, spans removed)."""
    cutoff = int((time.time() - max_age_s) * 1e9) if max_age_s else None
    con.execute(_UNITS, {"cutoff": cutoff, "max_rows": max_rows or None})
    units = con.execute("SELECT count(*) FROM __doomed").fetchall()[0][0]
    if not units:
        return 0, 0
    if archive is not None:
        table = con.sql(f"SELECT * {_DOOMED_SPANS}").to_arrow_table()
        lake.write_partitioned(table, archive.fs, archive.root, archive.partition_by)
    con.execute("BEGIN")
    try:
        for table in ("reward_dimensions", "triplet_payloads", "logs"):
            con.execute(f"DELETE FROM {table} WHERE (trace_id, span_id) IN (SELECT (trace_id, span_id) {_DOOMED_SPANS})")
        spans = con.execute(f"DELETE {_DOOMED_SPANS}").fetchall()[0][0]
        con.execute("DELETE FROM attempt_summaries WHERE rollout_id IN (SELECT unit FROM __doomed)")
        con.execute("COMMIT")
    except duckdb.Error:
        con.execute("ROLLBACK")
        raise
    con.execute("DROP TABLE __doomed")
    return units, spans
