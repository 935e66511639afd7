"""Throughput of the load-balancing tier: a front collector (otlp → batch → loadbalancing) in
front of 3 backend collectors (the default config each), all on this machine, driven by
bench/load.py's clients (LLM-style spans, unique ids, retry on refusal). Prints the front's
acknowledged spans/s and CPU, and checks that every acknowledged span is stored, once, on the
backends after SIGTERM (front first, so its queues drain into the backends).

    .venv/bin/python bench/loadbalancing.py --duration 20
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import client_proc, free_port, make_config, proc_stats  # noqa: E402

SPANPIPE = str(Path(sys.executable).with_name("spanpipe"))


def start(workdir: Path, config: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([SPANPIPE, "run", "--config", str(config)], cwd=workdir,
                            stdout=open(workdir / "collector.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((workdir / "collector.log").read_text())
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--backends", type=int, default=3)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--spans-per-request", type=int, default=512)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="spanpipe-lb-"))
    backends, dbs, endpoints = [], [], []
    for k in range(args.backends):
        work = root / f"backend{k}"
        work.mkdir()
        config, db, port = make_config(work, None)
        backends.append(start(work, config, port))
        dbs.append(db)
        endpoints.append(f"127.0.0.1:{port}")
    front_dir = root / "front"
    front_dir.mkdir()
    port = free_port()
    front_cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}", "max_recv_msg_size_mib": 64}}}},
        "processors": {"batch": {}},
        "exporters": {"loadbalancing": {"resolver": {"static": {"hostnames": endpoints}},
                                        "protocol": {"otlp": {"tls": {"insecure": True}}}}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                             "exporters": ["loadbalancing"]}},
                    "telemetry": {"metrics": {"address": f"127.0.0.1:{free_port()}"}}},
    }
    (front_dir / "config.yaml").write_text(yaml.safe_dump(front_cfg))
    front = start(front_dir, front_dir / "config.yaml", port)
    cpu0, _ = proc_stats(front.pid)
    out: mp.Queue = mp.Queue()
    start_at = time.time() + 2.0
    clients = [mp.Process(target=client_proc, args=(i, f"127.0.0.1:{port}", args.spans_per_request, args.duration,
                                                    0.0, args.threads, start_at, out)) for i in range(args.procs)]
    for c in clients:
        c.start()
    results = [out.get() for _ in clients]
    for c in clients:
        c.join()
    load_end = time.time()
    cpu1, peak = proc_stats(front.pid)
    front.send_signal(signal.SIGTERM)
    rc_front = front.wait(600)
    for b in backends:
        b.send_signal(signal.SIGTERM)
    rcs = [b.wait(600) for b in backends]
    import duckdb

    per_backend = []
    for db in dbs:
        con = duckdb.connect(str(db), read_only=True)
        per_backend.append(con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchone())
        con.close()
    acked = sum(r["acked"] for r in results)
    stored = sum(n for n, _ in per_backend)
    distinct = sum(d for _, d in per_backend)
    print(f"front + {args.backends} backends on one 2-core machine; load {args.procs} procs x {args.threads} threads, "
          f"{args.spans_per_request} spans/request, {args.duration:.0f}s")
    print(f"acknowledged by the front   {acked:,}  ({acked / (load_end - start_at):,.0f} spans/s during load)")
    print(f"stored on the backends      {stored:,} ({', '.join(f'{n:,}' for n, _ in per_backend)}); "
          f"duplicates {stored - distinct}")
    print(f"client retries/failures     {sum(r['retries'] for r in results)}/{sum(r['failed'] for r in results)}")
    print(f"front CPU                   {(cpu1 - cpu0) / (load_end - start_at) * 100:.0f}% of one core; "
          f"peak RSS {peak / 2**20:.0f} MiB")
    print(f"exit codes                  front {rc_front}, backends {rcs}")
    print("zero loss                  ", "yes" if stored == acked and distinct == stored else "NO")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
