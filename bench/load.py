"""OTLP gRPC load generator and end-to-end throughput benchmark.

Starts a collector (`spanpipe run`, default: OTLP → batch → DuckDB, on free ports), drives it
from several client processes with pre-built realistic LLM-agent requests for a fixed duration
(as fast as possible, or at --rate spans/s), then sends SIGTERM and waits for the drain. Each
request's spans start when it is sent (--fixed-times: at its template's own times, as before
2026-12-07).
Prints: spans sent/acknowledged/stored, sustained spans/s (acknowledged spans stored ÷ time from
first send until the collector exited), collector CPU and peak RSS, and the loss check (count,
and a sample of ids looked up one by one).

    .venv/bin/python bench/load.py --duration 20 --procs 2
    .venv/bin/python bench/load.py --rate 20000 --duration 30
    .venv/bin/python bench/load.py --config config/examples/rl-training.yaml   # another chain
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import Template  # noqa: E402

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RETRYABLE = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_proc(idx: int, endpoint: str, spans_per_request: int, duration: float, rate: float,
                threads: int, start_at: float, out: mp.Queue, fixed_times: bool = False) -> None:
    """One client process: `threads` senders sharing a rate budget; reports what was acked."""
    templates = [Template(spans_per_request, seed=idx * 1000 + i) for i in range(8)]
    channel = grpc.insecure_channel(endpoint, options=[("grpc.max_send_message_length", 64 << 20)])
    export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
    lock = threading.Lock()
    counter = [0]
    acked, retries, failed = [0], [0], [0]
    sample: list[tuple[int, int]] = []  # (template index, request number) of some acked requests
    interval = threads * spans_per_request / rate if rate else 0.0
    while time.time() < start_at:
        time.sleep(0.001)
    stop_at = start_at + duration

    def sender(tid: int) -> None:
        next_send = time.monotonic()
        rng = random.Random(idx * 100 + tid)
        while time.time() < stop_at:
            with lock:
                counter[0] += 1
                n = counter[0]
            t_idx = n % len(templates)
            prefix = ((idx + 1) << 48 | n).to_bytes(8, "big")
            payload = templates[t_idx].stamp(prefix, None if fixed_times else time.time_ns())
            delay = 0.05
            while True:
                try:
                    export(payload, timeout=60)
                    break
                except grpc.RpcError as exc:
                    if exc.code() in RETRYABLE:
                        with lock:
                            retries[0] += 1
                        time.sleep(delay * (0.5 + rng.random()))
                        delay = min(delay * 2, 2.0)
                        continue
                    with lock:
                        failed[0] += 1
                    payload = None
                    break
            if payload is not None:
                with lock:
                    acked[0] += spans_per_request
                    if n % 97 == 0:
                        sample.append((t_idx, n))
            if interval:
                next_send += interval
                time.sleep(max(0.0, next_send - time.monotonic()))

    ts = [threading.Thread(target=sender, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ids = []
    for t_idx, n in sample:
        ids.extend(templates[t_idx].ids_for(((idx + 1) << 48 | n).to_bytes(8, "big")))
    usage = os.times()
    out.put({"acked": acked[0], "retries": retries[0], "failed": failed[0], "sample_ids": ids,
             "cpu": usage.user + usage.system})


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a live process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    peak = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cpu, peak


def tree_pids(pid: int) -> list[int]:
    """The process and all its descendants (decode workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def is_resource_tracker(pid: int) -> bool:
    """multiprocessing's helper process, a child of the collector that decodes nothing."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"resource_tracker" in f.read()
    except OSError:
        return False


def tree_stats(pid: int, cpu_seen: dict[int, float]) -> tuple[float, int, int]:
    """(CPU seconds of every process of the tree seen so far, summed current RSS, summed current
    PSS). A sum of RSS counts each shared library page once per process that maps it (DuckDB's,
    Arrow's, Python's: the workers map them too); PSS divides such pages among their processes."""
    rss = pss = 0
    for p in tree_pids(pid):
        try:
            cpu_seen[p] = proc_stats(p)[0]
            rss += current_rss(p)
            pss += current_pss(p)
        except OSError:
            pass
    return sum(cpu_seen.values()), rss, pss


def profile_summary(raw: Path, top: int = 30) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        count = int(n)
        total += count
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + count
        for f in set(frames):
            incl_n[f] = incl_n.get(f, 0) + count
    if not total:
        return "no samples"
    rows = [f"{total} samples", "self%  incl%  function"]
    for f, n in sorted(self_n.items(), key=lambda kv: -kv[1])[:top]:
        rows.append(f"{100 * n / total:5.1f}  {100 * incl_n[f] / total:5.1f}  {f}")
    return "\n".join(rows)


def current_pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def current_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_config(workdir: Path, base: Path | None) -> tuple[Path, Path, int]:
    grpc_port, query_port = free_port(), free_port()
    db = workdir / "spans.duckdb"
    cfg = yaml.safe_load((base or ROOT / "config" / "default.yaml").read_text())
    cfg["receivers"]["otlp"]["protocols"] = {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}",
                                                      "max_recv_msg_size_mib": 64}}
    for eid, ecfg in cfg["exporters"].items():
        if eid.split("/")[0] == "duckdb":
            ecfg["path"] = str(db)
            ecfg["query"] = {"endpoint": f"127.0.0.1:{query_port}"}
    for xid, xcfg in (cfg.get("extensions") or {}).items():
        if xid.split("/")[0] == "file_storage":
            xcfg["directory"] = str(workdir / "file_storage")
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, db, grpc_port


def idle_probe(endpoint: str, pid: int, seconds: float) -> list[tuple[float, str, int]]:
    """(seconds after the load, status code, collector RSS) of one 8-span request a second."""
    from bench.workload import build_request
    rng = random.Random(99)
    out = []
    t0 = time.time()
    with grpc.insecure_channel(endpoint) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        while time.time() - t0 < seconds:
            time.sleep(1.0)
            body, _ = build_request(8, rng, f"probe-{len(out)}")
            try:
                export(body, timeout=5)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            out.append((time.time() - t0, code, current_rss(pid)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    ap.add_argument("--rate", type=float, default=0.0, help="target spans/s in total (0 = as fast as possible)")
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--threads", type=int, default=4, help="concurrent requests per client process")
    ap.add_argument("--spans-per-request", type=int, default=512)
    ap.add_argument("--fixed-times", action="store_true",
                    help="every request of a template carries the template's own start times (16 windows "
                         "~1,000 s apart, as before 2026-12-07) instead of the time it is sent")
    ap.add_argument("--config", type=Path, help="collector config to bench (ports and paths are rewritten)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--profile", choices=("main", "gil", "all"),
                    help="sample the collector process (main; gil: only the thread holding the GIL) or it and its decode workers (all) with py-spy "
                         "during the load and print the functions that take the most time")
    ap.add_argument("--profile-rate", type=int, default=50, help="py-spy samples per second (more: finer, and slows the collector more)")
    ap.add_argument("--idle-probe", type=float, default=0.0,
                    help="after the load, stay idle and send one small request a second for this long "
                         "(does the memory limiter accept again once nothing is held?)")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="spanpipe-bench-"))
    config, db, port = make_config(workdir, args.config)
    spanpipe = str(Path(sys.executable).with_name("spanpipe"))
    log = open(workdir / "collector.log", "wb")
    coll = subprocess.Popen([spanpipe, "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if coll.poll() is not None or time.monotonic() > deadline:
            print((workdir / "collector.log").read_text(), file=sys.stderr)
            return 1
        time.sleep(0.05)

    cpu_seen: dict[int, float] = {}
    cpu0, _, _ = tree_stats(coll.pid, cpu_seen)
    main_cpu0 = cpu_seen[coll.pid]
    out: mp.Queue = mp.Queue()
    start_at = time.time() + 2.0  # clients build their templates first
    per_proc_rate = args.rate / args.procs if args.rate else 0.0
    clients = [mp.Process(target=client_proc, args=(i, f"127.0.0.1:{port}", args.spans_per_request,
                                                    args.duration, per_proc_rate, args.threads, start_at, out,
                                                    args.fixed_times))
               for i in range(args.procs)]
    for c in clients:
        c.start()
    spy = None
    if args.profile:
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(coll.pid),
                                *(["--subprocesses"] if args.profile == "all" else ["--gil"] if args.profile == "gil" else []), "--nonblocking", "--rate", str(args.profile_rate), "--format", "raw",
                                "--duration", str(int(args.duration)), "-o", str(workdir / "profile.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = peak_pss = 0
    timeline: list[tuple[float, int]] = []
    results = []
    while len(results) < len(clients):
        try:
            results.append(out.get(timeout=0.5))
        except Exception:  # noqa: BLE001 - queue.Empty: sample RSS meanwhile
            pass
        if coll.poll() is None:
            _, rss_now, pss_now = tree_stats(coll.pid, cpu_seen)
            peak, peak_pss = max(peak, rss_now), max(peak_pss, pss_now)
            timeline.append((time.time() - start_at, rss_now))
    for c in clients:
        c.join()
    load_end = time.time()
    cpu1, rss_now, pss_now = tree_stats(coll.pid, cpu_seen)
    main_cpu = cpu_seen[coll.pid] - main_cpu0
    main_peak = proc_stats(coll.pid)[1]  # VmHWM: what the memory_limiter's limit is about
    peak, peak_pss = max(peak, rss_now), max(peak_pss, pss_now)
    helpers = [is_resource_tracker(p) for p in tree_pids(coll.pid)[1:]]
    workers = helpers.count(False)
    tracker_note = " and multiprocessing's resource tracker" if True in helpers else ""
    probes = idle_probe(f"127.0.0.1:{port}", coll.pid, args.idle_probe) if args.idle_probe else []
    coll.send_signal(signal.SIGTERM)
    rc = coll.wait(600)
    drained = time.time()

    import duckdb
    acked = sum(r["acked"] for r in results) + sum(8 for _, code, _ in probes if code == "OK")
    con = duckdb.connect(str(db), read_only=True)
    stored, distinct = con.execute(
        "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchall()[0]
    sample = [i for r in results for i in r["sample_ids"]]
    con.execute("CREATE TEMP TABLE sample (trace_id VARCHAR, span_id VARCHAR)")
    if sample:
        con.executemany("INSERT INTO sample VALUES (?, ?)", sample)
    found = con.execute("SELECT count(*) FROM sample JOIN spans USING (trace_id, span_id)").fetchall()[0][0]
    con.close()
    elapsed = drained - start_at
    print(f"collector exit code      {rc}")
    print(f"load                     {args.procs} procs x {args.threads} threads, "
          f"{args.spans_per_request} spans/request, {args.duration:.0f}s, rate={'max' if not args.rate else int(args.rate)}")
    print(f"acknowledged spans       {acked}")
    print(f"stored spans             {stored}")
    print(f"client retries/failures  {sum(r['retries'] for r in results)}/{sum(r['failed'] for r in results)}")
    print(f"sample ids found         {found}/{len(sample)}")
    print(f"drain after SIGTERM      {drained - load_end:.2f}s")
    print(f"sustained spans/s        {stored / elapsed:,.0f}   (stored / (first send .. drained))")
    print(f"duplicated spans         {stored - distinct}")
    print(f"collector CPU            {(cpu1 - cpu0) / (load_end - start_at) * 100:.0f}% of one core during load "
          f"({main_cpu / (load_end - start_at) * 100:.0f}% the collector process, the rest its {workers} "
          f"decode worker(s){tracker_note})")
    client_cpu = sum(r["cpu"] for r in results)
    print(f"load clients CPU         {client_cpu / (load_end - start_at) * 100:.0f}% of one core")
    print(f"collector peak RSS       {peak / 2**20:.0f} MiB (all its processes)")
    print(f"  of which the collector {main_peak / 2**20:.0f} MiB (VmHWM of the collector process alone)")
    print(f"  peak PSS               {peak_pss / 2**20:.0f} MiB (all its processes, shared library pages counted once)")
    marks = [timeline[int(len(timeline) * q) - 1] for q in (0.1, 0.25, 0.5, 0.75, 1.0)] if timeline else []
    print("collector RSS over time  " + ", ".join(f"{t:.0f}s {r / 2**20:.0f}MiB" for t, r in marks))
    if probes:
        print("idle probes              " + ", ".join(f"{t:.0f}s {code} {rss / 2**20:.0f}MiB" for t, code, rss in probes))
    if spy is not None:
        spy.wait(60)
        print(f"profile (py-spy, {'collector and workers' if args.profile == 'all' else 'collector process'}, "
              "share of samples)")
        print(profile_summary(workdir / "profile.txt"))
    ok = rc == 0 and stored == acked and stored == distinct and found == len(sample)
    print("zero loss                ", "yes" if ok else "NO")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"work directory           {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
