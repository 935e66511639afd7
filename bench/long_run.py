"""The duckdb exporter's insert rate in a warehouse that has been running a long time: what the
per-batch statements cost once the completion log (`rollout_completions`, one row per rollout),
the reward dimensions (one row per reward), the attempt summaries (one row per attempt) and the
`spans` table hold what a long RL run leaves.

The stored history is generated in SQL (older start times than the new spans, in arrival order,
as a real log has them); then the same pre-built LLM-agent batches bench/load.py sends (512-span
requests, each a rollout with its reward and rollout span, in batches of 8,192) go through the
exporter's `send`, one core, no collector around it.

    .venv/bin/python bench/long_run.py                          # 0 and 1,000,000 stored completions
    .venv/bin/python bench/long_run.py --completions 0,100000,1000000 --spans 0,5000000
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.limits import processed, requests  # noqa: E402
from spanpipe.exporters.duckdb import DuckDBExporter, DuckDBExporterConfig  # noqa: E402

# Before the new spans' start times (bench/workload.py: 1.76e18 ns on), one millisecond apart.
_HISTORY_START = 1_700_000_000_000_000_000


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _store_history(exporter: DuckDBExporter, completions: int, spans: int) -> None:
    """`completions` rollouts completed, each with a reward dimension and an attempt summary;
    `spans` spans."""
    writer = exporter.db.writer
    assert writer is not None
    if completions:
        writer.execute(f"""
            INSERT INTO attempt_summaries (rollout_id, attempt_key, attempt_id, start_time_unix_nano,
                                           last_span_time_unix_nano, spans, llm_calls, final_reward)
            SELECT 'ro-old-' || i, 'at-old-' || i, 'at-old-' || i, {_HISTORY_START} + i * 1000000,
                   {_HISTORY_START} + i * 1000000 + 500000, 64, 62, 1.0
            FROM range({completions}) t(i)""")
        writer.execute(f"""
            INSERT INTO reward_dimensions
            SELECT md5(i::VARCHAR), substr(md5('r' || i::VARCHAR), 1, 16), 0, 'primary', 1.0, 'agentlightning'
            FROM range({completions}) t(i)""")
        writer.execute(f"""
            INSERT INTO rollout_completions
            SELECT nextval('rollout_completion_seq'), 'ro-old-' || i, 'at-old-' || i, md5(i::VARCHAR),
                   substr(md5('s' || i::VARCHAR), 1, 16), 'succeeded', NULL, 1.0,
                   {_HISTORY_START} + i * 1000000, {_HISTORY_START} + i * 1000000 + 500000
            FROM range({completions}) t(i)""")
    if spans:
        # LLM-call-like rows, 64 per rollout: what the per-batch statements scan is ids, times,
        # rollout ids and span types.
        writer.execute(f"""
            INSERT INTO spans BY NAME
            SELECT md5((i // 8)::VARCHAR) AS trace_id, substr(md5('s' || i::VARCHAR), 1, 16) AS span_id,
                   'openai.chat.completion' AS name, 3 AS kind,
                   {_HISTORY_START} + i * 15625 AS start_time_unix_nano,
                   {_HISTORY_START} + i * 15625 + 500000 AS end_time_unix_nano,
                   0 AS status_code, '{{"gen_ai.usage.input_tokens": 100}}'::JSON AS attributes,
                   'ro-old-' || (i // 64) AS rollout_id, 'at-old-' || (i // 64) AS attempt_id,
                   i % 64 + 1 AS sequence_id, CASE WHEN i % 64 = 63 THEN 'reward' ELSE 'llm' END AS span_type,
                   CASE WHEN i % 64 = 63 THEN 1.0 END AS reward
            FROM range({spans}) t(i)""")
    writer.execute("CHECKPOINT")


def run(batches: list, completions: int, spans: int) -> tuple[float, float]:
    """spans/s and µs of CPU per span of sending `batches` into a warehouse with that history."""
    with tempfile.TemporaryDirectory() as tmp:
        exporter = DuckDBExporter("duckdb", DuckDBExporterConfig(path=f"{tmp}/long.duckdb",
                                                                 query={"endpoint": "127.0.0.1:0"}))
        exporter.open()
        assert exporter._indexer is not None
        exporter._indexer.stop()  # the insert alone: payloads are computed in idle time
        exporter._indexer = None
        try:
            _store_history(exporter, completions, spans)
            n = sum(len(b) for b in batches)
            cpu0, t0 = _cpu(), time.perf_counter()
            for batch in batches:
                exporter.send(batch, 60)
            cpu1, t1 = _cpu(), time.perf_counter()
        finally:
            assert exporter.query_server is not None
            exporter.query_server.stop()
            exporter.close()
    return n / (t1 - t0), (cpu1 - cpu0) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--completions", default="0,1000000",
                    help="stored completions, and as many reward dimensions, to try (comma-separated)")
    ap.add_argument("--spans", default="0", help="stored spans to try (comma-separated)")
    ap.add_argument("--requests", type=int, default=320, help="requests of 512 spans sent per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs per setting (the median is printed)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # limits' notes about the columns it derives itself
    batches = processed(requests(args.requests, 512))
    print(f"{sum(len(b) for b in batches):,} spans in {len(batches)} batches per run, median of {args.repeat}")
    for spans in (int(s) for s in args.spans.split(",")):
        for completions in (int(c) for c in args.completions.split(",")):
            runs = [run(batches, completions, spans) for _ in range(args.repeat)]
            rate = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"stored completions {completions:>10,}  stored spans {spans:>11,}   "
                  f"{rate:>8,.0f} spans/s   {cpu:5.1f} µs of CPU per span")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
