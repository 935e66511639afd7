"""This machine's ceilings for the collector's stages, measured in one run, and spanpipe against them.

Each stage runs alone, on one core, over the same pre-built LLM-agent requests `bench/load.py`
sends (512 spans each):

  parse     upb parse of the request bytes only (ExportTraceServiceRequest.FromString)
  decode    parse + decode into a SpanBatch in Python (upb objects, then Python values), and the
            compiled decoder's request -> Arrow columns with the JSON encoded (what a decode
            worker runs for an ordinary request)
  encode    SpanBatch -> Arrow table of the warehouse columns, JSON included (SpanBatch.to_arrow)
  insert    Arrow tables of 16,384 spans (under load the duckdb exporter's queue merges two
            batch-processor flushes into one such transaction: one row group) inserted into a
            DuckDB file: plain INSERT (the database's own limit) and the duckdb exporter's send
            (dedupe, summaries, rollout completions, its row group size)
  parquet   the same tables written as one Parquet file

Then, unless --no-collector, it runs bench/load.py (the whole collector, default pipeline or
--config) for --duration seconds and prints its sustained rate as a fraction of the lowest ceiling.

    .venv/bin/python bench/limits.py
    .venv/bin/python bench/limits.py --config config/examples/rl-training.yaml --duration 30
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import Template  # noqa: E402
from spanpipe import otlp_columns  # noqa: E402
from spanpipe.exporters.duckdb import DuckDBExporter, DuckDBExporterConfig  # noqa: E402
from spanpipe.otlp import decode_traces_protobuf, parse_traces_protobuf  # noqa: E402
from spanpipe.promoted import PromotedColumns  # noqa: E402
from spanpipe.spanbatch import SpanBatch  # noqa: E402


def rate(spans: int, fn, repeat: int) -> float:
    """Median spans/s of `repeat` timed runs of fn."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(spans / (time.perf_counter() - t0))
    return statistics.median(runs)


def requests(n: int, spans_per_request: int) -> list[bytes]:
    templates = [Template(spans_per_request, seed) for seed in range(8)]
    return [templates[i % 8].stamp((1 << 48 | i).to_bytes(8, "big")) for i in range(n)]


def processed(bodies: list[bytes], size: int) -> list[SpanBatch]:
    """Batches of `size` spans with the rollout and reward columns, as the exporter receives them."""
    promoted = PromotedColumns("limits", logging.getLogger("limits"))
    out, group = [], []
    for body in bodies:
        group.append(promoted.fill(decode_traces_protobuf(body).batch))
        if sum(len(b) for b in group) >= size:
            out.append(SpanBatch.concat(group))
            group = []
    return out


def insert_rate(tables: list[pa.Table], batches: list[SpanBatch] | None, repeat: int) -> float:
    spans = sum(t.num_rows for t in tables)
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            if batches is None:
                con = duckdb.connect(f"{tmp}/limit.duckdb")
                con.execute("SET checkpoint_threshold = '1GB'")
                con.register("first", tables[0])
                con.execute("CREATE TABLE spans AS SELECT * FROM first LIMIT 0")
                t0 = time.perf_counter()
                for t in tables:
                    con.register("t", t)
                    con.execute("INSERT INTO spans SELECT * FROM t")
                con.execute("CHECKPOINT")
                runs.append(spans / (time.perf_counter() - t0))
                con.close()
            else:
                exp = DuckDBExporter("duckdb", DuckDBExporterConfig(path=f"{tmp}/limit.duckdb", query={"endpoint": "127.0.0.1:0"}))
                exp.open()
                exp._indexer.stop()  # the insert alone: payloads are computed in idle time, not here
                exp._indexer = None
                t0 = time.perf_counter()
                for b in batches:
                    exp.send(b, 60)
                with exp._write_lock:
                    exp.db.writer.execute("CHECKPOINT")
                runs.append(spans / (time.perf_counter() - t0))
                exp.query_server.stop()
                exp.close()
    return statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=160, help="requests of 512 spans per stage run")
    ap.add_argument("--repeat", type=int, default=3, help="runs per stage (the median is printed)")
    ap.add_argument("--config", type=Path, help="collector config for the end-to-end run")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load for the end-to-end run")
    ap.add_argument("--no-collector", action="store_true", help="ceilings only")
    args = ap.parse_args()

    bodies = requests(args.requests, 512)
    spans = 512 * len(bodies)
    ceilings: dict[str, float] = {}
    ceilings["parse (upb)"] = rate(spans, lambda: [parse_traces_protobuf(b) for b in bodies], args.repeat)
    ceilings["decode (parse + Python values)"] = rate(spans, lambda: [decode_traces_protobuf(b) for b in bodies],
                                                      args.repeat)
    if otlp_columns.compiled():
        ceilings["decode (compiled, to Arrow columns)"] = rate(
            spans, lambda: [otlp_columns.decode_columns(b) for b in bodies], args.repeat)
    batches = processed(bodies, DuckDBExporterConfig().row_group_size)
    tables = [b.to_arrow() for b in batches]
    ceilings["encode (to_arrow, JSON)"] = rate(spans, lambda: [b.to_arrow() for b in batches], args.repeat)
    ceilings["DuckDB insert (plain INSERT)"] = insert_rate(tables, None, args.repeat)
    ceilings["DuckDB insert (exporter: dedupe, completions)"] = insert_rate(tables, batches, args.repeat)

    def write_parquet() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            pq.write_table(pa.concat_tables(tables), f"{tmp}/limit.parquet")
    ceilings["Parquet write"] = rate(spans, write_parquet, args.repeat)

    print(f"ceilings on this machine, one core each ({spans:,} spans per run, median of {args.repeat})")
    for name, value in ceilings.items():
        print(f"  {name:<48} {value:>10,.0f} spans/s")
    lowest = min(ceilings, key=ceilings.get)
    print(f"  lowest: {lowest} ({ceilings[lowest]:,.0f} spans/s)")
    if args.no_collector:
        return 0
    cmd = [sys.executable, str(ROOT / "bench" / "load.py"), "--duration", str(args.duration)]
    if args.config:
        cmd += ["--config", str(args.config)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration * 10 + 300)
    print(out.stdout, end="")
    found = re.search(r"sustained spans/s\s+([\d,]+)", out.stdout)
    if out.returncode or not found:
        print(out.stderr, file=sys.stderr)
        return 1
    sustained = float(found.group(1).replace(",", ""))
    print(f"spanpipe end to end: {sustained:,.0f} spans/s = {sustained / ceilings[lowest]:.2f} x the lowest "
          f"ceiling ({lowest}), {sustained / ceilings['DuckDB insert (plain INSERT)']:.2f} x DuckDB's plain insert")
    return 0


if __name__ == "__main__":
    sys.exit(main())
