"""Web viewer response times on a large warehouse, idle and while the collector ingests.

Builds (or reuses, --db) a warehouse of 10,000 rollouts × 100 spans = 1,000,000 spans in the
collector's schema, starts a collector on a copy of it (default config: rollout, reward, batch →
duckdb, query API with the viewer), and times the viewer's JSON requests — what the rollouts page
and a rollout's page fetch — first idle, then while 2 load processes send `--rate` spans/s over
OTLP/gRPC. Prints median and p95 per request kind and phase, and what was acknowledged vs stored.

    .venv/bin/python bench/ui.py                          # 1M spans, 10,000 spans/s
    .venv/bin/python bench/ui.py --db /tmp/ui-base.duckdb --requests 40
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import client_proc, make_config  # noqa: E402
from bench.triplets import write_warehouse  # noqa: E402

SPANPIPE = str(Path(sys.executable).with_name("spanpipe"))


def kinds(rollouts: int, rng: random.Random) -> dict[str, callable]:
    return {
        "rollouts page (newest first)": lambda: "/ui/api/rollouts",
        "rollouts page 3, succeeded, by final reward": lambda: "/ui/api/rollouts?status=succeeded&sort=final_reward&page=3",
        "rollouts filtered by id": lambda: f"/ui/api/rollouts?id={rng.randrange(rollouts):05d}",
        "one rollout (100 spans, 12 calls)": lambda: f"/ui/api/rollouts/ro-{rng.randrange(rollouts):05d}",
        "overview": lambda: "/ui/api/overview",
    }


def time_requests(base: str, paths: dict[str, callable], n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(n):
        for kind, path in paths.items():
            t = time.perf_counter()
            with urllib.request.urlopen(base + path(), timeout=60) as r:
                r.read()
                assert r.status == 200
            out[kind].append((time.perf_counter() - t) * 1000)
    return out


def report(phase: str, times: dict[str, list[float]]) -> None:
    print(f"\n{phase}")
    print(f"  {'request':<46} {'median ms':>10} {'p95 ms':>8}")
    for kind, ms in times.items():
        p95 = sorted(ms)[max(0, int(len(ms) * 0.95) - 1)]
        print(f"  {kind:<46} {statistics.median(ms):>10.1f} {p95:>8.1f}")


def count(base: str) -> int:
    req = urllib.request.Request(base + "/v1/sql", data=b"SELECT count(*) AS n FROM spans",
                                 headers={"Content-Type": "text/plain"})
    import json
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())[0]["n"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rollouts", type=int, default=10_000)
    ap.add_argument("--db", type=Path, help="the base warehouse (built here when missing; kept)")
    ap.add_argument("--rate", type=float, default=10_000, help="spans/s sent while measuring the second phase")
    ap.add_argument("--requests", type=int, default=30, help="requests of each kind per phase")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="spanpipe-ui-bench-"))
    base_db = args.db or work / "base.duckdb"
    if not base_db.exists():
        t = time.perf_counter()
        n = write_warehouse(base_db, args.rollouts, 0)
        print(f"wrote {n:,} spans ({args.rollouts:,} rollouts) in {time.perf_counter() - t:.0f} s to {base_db}")
    config, db, grpc_port = make_config(work, None)
    shutil.copy(base_db, db)
    proc = subprocess.Popen([SPANPIPE, "run", "--config", str(config)], cwd=work,
                            stdout=open(work / "collector.log", "wb"), stderr=subprocess.STDOUT)
    try:
        endpoint = Path(f"{db}.endpoint")
        deadline = time.monotonic() + 120
        while not endpoint.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                print((work / "collector.log").read_text(), file=sys.stderr)
                return 1
            time.sleep(0.2)
        base = endpoint.read_text().strip()
        before = count(base)
        print(f"collector on {before:,} stored spans; viewer at {base}/ui/")
        rng = random.Random(7)
        paths = kinds(args.rollouts, rng)
        time_requests(base, paths, 2)  # warm the caches once
        report("idle", time_requests(base, paths, args.requests))

        out: mp.Queue = mp.Queue()
        duration = 20 + args.requests * 4.0
        start_at = time.time() + 1
        clients = [mp.Process(target=client_proc, args=(i, f"127.0.0.1:{grpc_port}", 512, duration, args.rate / 2, 2,
                                                        start_at, out)) for i in range(2)]
        for c in clients:
            c.start()
        time.sleep(4)
        t = time.perf_counter()
        busy = time_requests(base, paths, args.requests)
        spent = time.perf_counter() - t
        results = [out.get() for _ in clients]
        for c in clients:
            c.join()
        acked = sum(r["acked"] for r in results)
        report(f"while ingesting {args.rate:,.0f} spans/s (the requests took {spent:.0f} s of the "
               f"{duration:.0f} s of load)", busy)
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        import duckdb

        with duckdb.connect(str(db), read_only=True) as con:
            stored = con.execute("SELECT count(*) FROM spans").fetchall()[0][0] - before
        print(f"\nload: {acked:,} spans acknowledged at {acked / duration:,.0f} spans/s, {stored:,} stored, "
              f"{sum(r['failed'] for r in results)} failed; collector exit code {proc.returncode}")
        return 0 if stored == acked and proc.returncode == 0 else 1
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
