"""What the llm_gateway receiver adds to an LLM call, against calling the model server directly and
against a LiteLLM proxy (Agent Lightning 0.3's choice) on the same upstream, in the same minutes.

Processes, all on 127.0.0.1: the fake vLLM-like upstream (`examples/fake_openai.py`), a collector
(`spanpipe run`: llm_gateway → rollout, reward, batch → duckdb), optionally `litellm` from its own
venv, and a load client per measurement (asyncio + aiohttp: N concurrent callers, each calling in a
loop for `--duration` seconds). Targets are measured in turn, round after round (`--runs`), and
each figure is the median over rounds. At the end the collector is stopped with SIGTERM and every
call the gateway answered is looked up in the warehouse by its response id. `--workers 0,1` runs
one collector per setting of the receiver's `workers` (proxy processes), measured side by side;
the gateway's CPU is the collector's and its workers'. `--upstream-latency 0.02` makes the upstream
take 20 ms before each answer, as a model server does: the machine is then not saturated by the
load itself, and the added latency is the gateway's own.

    .venv/bin/python bench/gateway.py                          # gateway vs direct
    make bench-gateway                                         # + LiteLLM (builds .venv-litellm)
    .venv/bin/python bench/gateway.py --litellm .venv-litellm/bin/litellm --duration 5 --runs 3
    .venv/bin/python bench/gateway.py --concurrency 16 --workers 0,1,2
    .venv/bin/python bench/gateway.py --concurrency 1,16,64 --workers 0,2 --upstream-latency 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import proc_stats, tree_pids, tree_stats  # noqa: E402
from examples.run_demo import free_port, wait_port  # noqa: E402
SPANPIPE = str(Path(sys.executable).parent / "spanpipe")
MESSAGES = [{"role": "system", "content": "You are a careful calculator. Answer with one sentence."},
            {"role": "user", "content": "What is 17 + 25?"}]


# ---- the load client (run as a subprocess: `bench/gateway.py --client ...`) -------------------------
async def client_run(url: str, concurrency: int, duration: float, stream: bool, model: str) -> dict[str, Any]:
    import aiohttp

    body = json.dumps({"model": model, "messages": MESSAGES, "stream": stream}).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-0123456789abcdef"}
    latencies: list[float] = []
    ttfts: list[float] = []
    ids: list[str] = []
    errors = 0
    stop_at = time.monotonic() + duration

    async def caller(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    if r.status != 200:
                        errors += 1
                        await r.read()
                        continue
                    if stream:
                        first = None
                        last = b""
                        async for chunk in r.content.iter_any():
                            if first is None:
                                first = time.perf_counter() - t0
                            last = chunk if b'"id"' in chunk else last
                        ttfts.append(first or 0.0)
                        marker = last.find(b'"id":"')
                        if marker >= 0:
                            ids.append(last[marker + 6:last.index(b'"', marker + 6)].decode())
                    else:
                        ids.append(json.loads(await r.read())["id"])
            except aiohttp.ClientError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(caller(session) for _ in range(concurrency)))
    return {"latencies": latencies, "ttfts": ttfts, "ids": ids, "errors": errors,
            "elapsed": time.monotonic() - started}


def measure(url: str, concurrency: int, duration: float, stream: bool, model: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--client", url, "--concurrency", str(concurrency),
                          "--duration", str(duration), "--model", model] + (["--stream"] if stream else []),
                         capture_output=True, text=True, timeout=duration + 120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# ---- the run -------------------------------------------------------------------------------------
def start_collector(tmp: Path, upstream: str, workers: int | str) -> tuple[subprocess.Popen, int, Path]:
    import yaml

    gw, grpc, metrics = free_port(), free_port(), free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / "spans.duckdb"
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc}"}}},
                      "llm_gateway": {"endpoint": f"127.0.0.1:{gw}", "upstreams": [{"base_url": upstream}],
                                      "workers": workers}},
        "processors": {"rollout": {}, "reward": {}, "batch": {}},
        "exporters": {"duckdb": {"path": str(db), "query": {"enabled": False}}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp", "llm_gateway"],
                                             "processors": ["rollout", "reward", "batch"], "exporters": ["duckdb"]}},
                    "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics}"}}},
    }
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([SPANPIPE, "run", "--config", str(tmp / "gateway.yaml")], cwd=tmp,
                            stdout=open(tmp / "collector.log", "wb"), stderr=subprocess.STDOUT)
    wait_port(gw, proc)
    return proc, gw, db


def start_litellm(binary: str, tmp: Path, upstream: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (tmp / "litellm.yaml").write_text(
        "model_list:\n  - model_name: bench-model\n    litellm_params:\n      model: hosted_vllm/bench-model\n"
        f"      api_base: {upstream}\n      api_key: none\n")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_MASTER_KEY": "sk-bench-0123456789abcdef"}
    proc = subprocess.Popen([os.path.abspath(binary), "--config", str(tmp / "litellm.yaml"), "--port", str(port), "--host", "127.0.0.1",
                             "--num_workers", "1"], cwd=tmp, env=env,
                            stdout=open(tmp / "litellm.log", "wb"), stderr=subprocess.STDOUT)
    wait_port(port, proc, timeout=180)
    return proc, port


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--model", default="bench-model", help=argparse.SUPPRESS)
    p.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument("--runs", type=int, default=3, help="rounds; figures are medians over rounds")
    p.add_argument("--litellm", help="path to a `litellm` executable (its own venv) to compare with")
    p.add_argument("--workers", default="auto",
                   help="the gateway's proxy processes (a number or auto); several: one collector each")
    p.add_argument("--upstream-latency", type=float, default=0.0,
                   help="seconds the fake upstream takes before each answer (a model server's queue and prefill)")
    args = p.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(client_run(args.client, int(args.concurrency), args.duration, args.stream,
                                                args.model))))
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    up_port = free_port()
    upstream_proc = subprocess.Popen([sys.executable, str(ROOT / "examples/fake_openai.py"), "--port", str(up_port),
                                      "--token-ids", "when_asked", "--latency", str(args.upstream_latency)],
                                     stdout=subprocess.DEVNULL)
    procs = [upstream_proc]
    try:
        wait_port(up_port, upstream_proc)
        upstream = f"http://127.0.0.1:{up_port}/v1"
        settings = [w if w == "auto" else int(w) for w in args.workers.split(",")]
        collectors: dict[str, tuple[subprocess.Popen, Path]] = {}
        targets = {"direct": upstream}
        for w in settings:
            name = "gateway" if len(settings) == 1 else f"gw w={w}"
            collector, gw_port, db = start_collector(tmp / f"w{w}", upstream, w)
            procs.append(collector)
            collectors[name] = (collector, db)
            targets[name] = f"http://127.0.0.1:{gw_port}/v1"
        if args.litellm:
            litellm, ll_port = start_litellm(args.litellm, tmp, upstream)
            procs.append(litellm)
            targets["litellm"] = f"http://127.0.0.1:{ll_port}/v1"
        levels = [int(c) for c in args.concurrency.split(",")]
        results: dict[tuple[str, int, bool], list[dict[str, Any]]] = {}
        gateway_ids: dict[str, list[str]] = {name: [] for name in collectors}
        gateway_cpu: dict[tuple[str, int, bool], list[float]] = {}
        for _ in range(args.runs):
            for stream in (False, True):
                for n in levels:
                    for name, base in targets.items():
                        cpu0 = tree_stats(collectors[name][0].pid, {})[0] if name in collectors else 0.0
                        r = measure(f"{base}/chat/completions", n, args.duration, stream, "bench-model")
                        if name in collectors:
                            gateway_ids[name] += r["ids"]
                            gateway_cpu.setdefault((name, n, stream), []).append(
                                (tree_stats(collectors[name][0].pid, {})[0] - cpu0) / r["elapsed"] * 100)
                        results.setdefault((name, n, stream), []).append(r)
        import duckdb

        landed: list[str] = []
        short: list[str] = []  # settings where some answered call is not in the warehouse, or ids repeat
        for name, (collector, db) in collectors.items():
            peak = max(proc_stats(p)[1] for p in tree_pids(collector.pid)) / 2**20
            collector.send_signal(signal.SIGTERM)
            rc = collector.wait(120)
            con = duckdb.connect(str(db), read_only=True)
            con.execute("CREATE TEMP TABLE sent AS SELECT unnest($1::VARCHAR[]) AS rid", [gateway_ids[name]])
            stored = con.execute("SELECT count(DISTINCT rid) FROM sent WHERE rid IN (SELECT attributes->>"
                                 "'gen_ai.response.id' FROM spans WHERE scope_name = 'spanpipe.llm_gateway')").fetchone()[0]
            with_ids = con.execute("SELECT count(*) FROM spans WHERE scope_name = 'spanpipe.llm_gateway' AND "
                                   "json_array_length(attributes->'response_token_ids') > 0").fetchone()[0]
            con.close()
            ids = gateway_ids[name]
            landed.append(f"{name}: collector exit code {rc}; peak RSS (largest process) {peak:.0f} MiB; calls answered "
                          f"{len(ids)}, distinct response ids {len(set(ids))}, found in the warehouse {stored}; "
                          f"gateway spans with token ids {with_ids}")
            if rc != 0 or not len(ids) == len(set(ids)) == stored == with_ids:
                short.append(name)

        def med(rs: list[dict[str, Any]], key: str, q: float) -> float:
            return statistics.median(pct(r[key], q) for r in rs) * 1000

        def rate(rs: list[dict[str, Any]]) -> float:
            return statistics.median(len(r["latencies"]) / r["elapsed"] for r in rs)

        print(f"rounds {args.runs} x {args.duration:.0f}s per measurement; medians over rounds; "
              f"upstream = fake vLLM (examples/fake_openai.py), {args.upstream_latency * 1000:g} ms before each answer")
        print(f"{'stream':>6} {'conc':>4} {'target':>8} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'+p50 ms':>8} {'+p99 ms':>8} {'ttft ms':>8} {'+ttft ms':>8} {'errors':>6} {'gw CPU':>7}")
        for stream in (False, True):
            for n in levels:
                direct = results[("direct", n, stream)]
                for name in targets:
                    rs = results[(name, n, stream)]
                    added = " " * 17 if name == "direct" else \
                        f"{med(rs, 'latencies', .5) - med(direct, 'latencies', .5):8.2f} " \
                        f"{med(rs, 'latencies', .99) - med(direct, 'latencies', .99):8.2f}"
                    ttft = f"{med(rs, 'ttfts', .5):8.2f}" if stream else " " * 8
                    added_ttft = f"{med(rs, 'ttfts', .5) - med(direct, 'ttfts', .5):8.2f}" \
                        if stream and name != "direct" else " " * 8
                    cpu = f"{statistics.median(gateway_cpu[(name, n, stream)]):6.0f}%" if name in collectors else ""
                    print(f"{str(stream):>6} {n:>4} {name:>8} {rate(rs):8.0f} {med(rs, 'latencies', .5):8.2f} "
                          f"{med(rs, 'latencies', .99):8.2f} {added} {ttft} {added_ttft} "
                          f"{sum(r['errors'] for r in rs):6d} {cpu:>7}")
        print("\n".join(landed))
        if short:
            sys.exit(f"not every answered call is in the warehouse with its token ids, once: {', '.join(short)}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
