"""Helper for bench/triplets.py, run with a python that has agentlightning==0.3.0: times its
TracerTraceToTriplet on the first N rollouts and on a flat trace from the bench warehouse.
Prints one JSON line."""

from __future__ import annotations

import json
import sys
import time

import duckdb
from agentlightning.adapter.triplet import TracerTraceToTriplet
from agentlightning.types import Span


def spans(con: duckdb.DuckDBPyConnection, where: str, limit: str = "") -> dict[str, list[Span]]:
    rows = con.execute(f"SELECT rollout_id, trace_id, span_id, parent_span_id, name, start_time_unix_nano, "
                       f"end_time_unix_nano, attributes, sequence_id FROM spans WHERE {where} "
                       f"ORDER BY rollout_id, sequence_id {limit}").fetchall()
    out: dict[str, list[Span]] = {}
    for rid, tid, sid, pid, name, s, e, attrs, seq in rows:
        out.setdefault(rid, []).append(Span.from_attributes(
            attributes=json.loads(attrs), rollout_id=rid, attempt_id="at-1", sequence_id=seq, name=name,
            trace_id=tid, span_id=sid, parent_id=pid, start_time=s / 1e9, end_time=e / 1e9))
    return out


def main() -> None:
    db, n, flat_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    con = duckdb.connect(db, read_only=True)
    ids = [f"ro-{r:05d}" for r in range(n)]
    by_rollout = spans(con, "rollout_id IN (" + ", ".join(f"'{i}'" for i in ids) + ")")
    flat_id = con.execute("SELECT max(rollout_id) FROM spans").fetchone()[0]
    flat = spans(con, f"rollout_id = '{flat_id}'", f"LIMIT {flat_n}")[flat_id]
    adapter = TracerTraceToTriplet()
    t0 = time.perf_counter()
    total = sum(len(adapter.adapt(by_rollout[i])) for i in ids)
    t1 = time.perf_counter()
    adapter.adapt(flat)
    t2 = time.perf_counter()
    print(json.dumps({"rollouts": n, "triplets": total, "rollouts_seconds": t1 - t0, "flat_seconds": t2 - t1}))


if __name__ == "__main__":
    main()
