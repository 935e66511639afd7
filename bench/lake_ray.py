"""Triplets from a Parquet lake: DuckDB on one machine vs Ray Data on a local Ray cluster.

Builds lakes of N million spans (copies of bench/triplets.py's 10,000-rollout warehouse with new
rollout and trace ids, written as the parquet exporter writes: zstd Parquet under date=…/), then
for each engine, in a fresh process: all completed rollouts' triplets, wall time and the peak of
the machine's used memory above what it was before (every Ray process counts, not only the driver).
Both engines must give the same number of triplets.

    .venv/bin/python bench/lake_ray.py --millions 1 3 10 --base /tmp/ui-base.duckdb
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.triplets import write_warehouse  # noqa: E402

RUN = {
    "duckdb": """
from spanpipe.warehouse.warehouse import Warehouse
with Warehouse.open_lake(LAKE) as wh:
    n = len(wh.triplets())
""",
    "ray": """
import ray
import spanpipe.lake.ray as lake_ray
ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
         log_to_driver=False, configure_logging=False)
n = sum(len(t) for t in ray.get(lake_ray.triplets(LAKE).dataset.to_arrow_refs()))
ray.shutdown()
""",
}


def used_memory() -> int:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":")
            info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


def build_lake(base: Path, lake: Path, copies: int) -> int:
    lake.mkdir(parents=True)
    con = duckdb.connect(str(base), read_only=True)
    total = 0
    for k in range(copies):
        out = lake / "date=2025-06-15" / f"part-{k:03d}.parquet"
        out.parent.mkdir(exist_ok=True)
        con.execute(f"""COPY (SELECT * REPLACE (rollout_id || '-c{k}' AS rollout_id,
                                              printf('%02d', {k}) || substr(trace_id, 3) AS trace_id)
                            FROM spans) TO '{out}' (FORMAT parquet, COMPRESSION zstd)""")
        total += con.execute("SELECT count(*) FROM spans").fetchall()[0][0]
    con.close()
    return total


def run(engine: str, lake: Path) -> dict:
    code = "import time, json\nLAKE = %r\nt = time.perf_counter()\n%s\nprint(json.dumps({'seconds': time.perf_counter() - t, 'triplets': n}))" % (
        str(lake), RUN[engine])
    before, peak = used_memory(), [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], used_memory() - before)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=3600)
    wall = time.perf_counter() - t
    done.set()
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "process_seconds": wall, "peak_mib": peak[0] / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--millions", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--base", type=Path, help="the 10,000-rollout warehouse (built when missing; kept)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spanpipe-lake-bench-"))
    base = args.base or work / "base.duckdb"
    if not base.exists():
        write_warehouse(base, 10_000, 0)
    try:
        print(f"{'spans':>10} {'engine':>7} {'triplets':>9} {'seconds':>8} {'with start-up':>14} {'peak MiB':>9}")
        for m in args.millions:
            lake = work / f"lake-{m}m"
            spans = build_lake(base, lake, m)
            counts = set()
            for engine in ("duckdb", "ray"):
                r = run(engine, lake)
                counts.add(r["triplets"])
                print(f"{spans:>10,} {engine:>7} {r['triplets']:>9,} {r['seconds']:>8.1f} {r['process_seconds']:>14.1f} "
                      f"{r['peak_mib']:>9,.0f}", flush=True)
            if len(counts) != 1:
                print(f"the engines disagree: {counts}")
                return 1
            shutil.rmtree(lake)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
