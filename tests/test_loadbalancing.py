"""The loadbalancing exporter with real processes: a front collector routes by rollout to three
backend collectors; every rollout lands whole on one backend, every span once, whatever shape the
agent gives its rollout ids (on the resource, on each span, or only on the trace's root)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from collector import Collector, wait_for
from spanpipe.exporters.loadbalancing import Ring
from spanpipe.warehouse.warehouse import Warehouse


def backend(tmp: Path, name: str) -> Collector:
    (tmp / name).mkdir()
    c = Collector(tmp / name, processors={"rollout": {"idle_timeout": "0s"}, "reward": {}, "batch": {"timeout": "20ms"}})
    return c


def front(tmp: Path, backends: list[Collector]) -> Collector:
    (tmp / "front").mkdir()
    c = Collector(tmp / "front")
    c.config["exporters"] = {"loadbalancing": {
        "resolver": {"static": {"hostnames": [b.grpc_endpoint for b in backends]}},
        "protocol": {"otlp": {"tls": {"insecure": True}, "retry_on_failure": {"initial_interval": "100ms",
                                                                               "max_elapsed_time": "0s"}}}}}
    c.config["service"]["pipelines"]["traces"]["exporters"] = ["loadbalancing"]
    c.wait_ports = [c.grpc_port]
    return c.rewrite()


def send_rollouts(endpoint: str, n: int, prefix: str = "") -> dict[str, int]:
    """n rollouts of three shapes (rollout id on the resource, on every span, or on the root only),
    each an agent span over an LLM call, a tool step and a reward; returns rollout → spans sent."""
    sent: dict[str, int] = {}
    providers = []
    for shape in ("resource", "attributes", "root_only"):
        for k in range(n):
            rid = f"ro-{prefix}{shape}-{k}"
            resource = {"service.name": "lb-agent", **({"agentlightning.rollout_id": rid} if shape == "resource" else {})}
            provider = TracerProvider(resource=Resource.create(resource))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
            providers.append(provider)
            tracer = provider.get_tracer("agent")
            ids = {"agentlightning.rollout_id": rid} if shape == "attributes" else {}
            root_ids = {"agentlightning.rollout_id": rid} if shape != "resource" else {}
            with tracer.start_as_current_span("agent", attributes=root_ids):
                # An LLM call with token ids, a tool step, and a reward for the call.
                with tracer.start_as_current_span("chat", attributes={**ids, **{
                        "gen_ai.operation.name": "chat", "gen_ai.response.id": f"{rid}-call",
                        "prompt_token_ids": [1, 2, k], "response_token_ids": [3, k]}}):
                    pass
                with tracer.start_as_current_span("tool", attributes=ids):
                    pass
                with tracer.start_as_current_span("agentlightning.annotation", attributes={**ids, **{
                        "agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": k / 10}}):
                    pass
            sent[rid] = 4
    for provider in providers:
        provider.shutdown()
    return sent


def where_rollouts_landed(backends: list[Collector], total: int, timeout: float) -> tuple[list[dict[str, int]], int]:
    """Once `total` spans are stored over the backends: per backend, rollout → spans; and how many
    spans are stored twice."""
    whs = [Warehouse.connect(b.query_url) for b in backends]

    def stored() -> int:
        return sum(w.sql("SELECT count(*) AS n FROM spans").column("n")[0].as_py() for w in whs)
    wait_for(lambda: stored() >= total, timeout, f"{total} spans on the backends")
    per_backend = [{r["rollout_id"]: r["n"] for r in w.sql(
        "SELECT rollout_id, count(*) AS n FROM spans GROUP BY rollout_id").to_pylist()} for w in whs]
    duplicates = sum(w.sql("SELECT count(*) - count(DISTINCT (trace_id, span_id)) AS d FROM spans")
                     .column("d")[0].as_py() for w in whs)
    return per_backend, duplicates


@contextlib.contextmanager
def started(tmp: Path, backends: list[Collector]) -> Iterator[Collector]:
    """The backends and a load-balancing front to them, running; all killed on the way out."""
    lb = front(tmp, backends)
    try:
        for b in backends:
            b.start()
        lb.start()
        yield lb
    finally:
        for b in backends:
            if b.proc is not None and b.proc.poll() is None:
                b.proc.send_signal(signal.SIGCONT)  # a paused process does not die of SIGKILL until resumed
            b.kill()
        lb.kill()


def homes_of(sent: dict[str, int], per_backend: list[dict[str, int]]) -> dict[str, list[int]]:
    """rollout → the backends it landed on; asserts each landed whole, and once, on exactly one."""
    homes = {rid: [k for k, counts in enumerate(per_backend) if rid in counts] for rid in sent}
    assert all(len(h) == 1 for h in homes.values()), {r: h for r, h in homes.items() if len(h) != 1}
    assert all(per_backend[h[0]][rid] == sent[rid] for rid, h in homes.items())  # whole, once
    return homes


def test_every_rollout_lands_whole_on_one_backend_even_with_a_backend_paused(tmp_path):
    backends = [backend(tmp_path, f"b{k}") for k in range(3)]
    with started(tmp_path, backends) as lb:
        # One backend paused for 15 s mid-run: its rollouts wait in its queue at the front, none go elsewhere.
        backends[1].proc.send_signal(signal.SIGSTOP)
        paused_at = time.monotonic()
        sent = send_rollouts(lb.grpc_endpoint, 12)
        time.sleep(max(0.0, paused_at + 15 - time.monotonic()))
        backends[1].proc.send_signal(signal.SIGCONT)
        per_backend, duplicates = where_rollouts_landed(backends, sum(sent.values()), 60)
        assert lb.stop() == 0
    homes = homes_of(sent, per_backend)
    assert duplicates == 0 and None not in set().union(*per_backend)  # every span tagged on its backend
    ring = Ring([b.grpc_endpoint for b in backends])
    assert all(backends[homes[rid][0]].grpc_endpoint == ring.backend(rid) for rid in sent)
    assert len({h[0] for h in homes.values()}) == 3  # the three backends share the rollouts


def durable_backend(tmp: Path, name: str) -> Collector:
    """A backend whose warehouse queue is on disk: what it acknowledged survives kill -9."""
    c = backend(tmp, name)
    c.config["processors"] = {"rollout": {"idle_timeout": "0s"}, "reward": {}}
    c.config["service"]["pipelines"]["traces"]["processors"] = ["rollout", "reward"]
    c.config["extensions"] = {"file_storage": {"directory": str(tmp / name / "queue")}}
    c.config["service"]["extensions"] = ["file_storage"]
    c.config["exporters"]["duckdb"]["sending_queue"] = {"storage": "file_storage", "batch": {"max_size": 2048}}
    return c.rewrite()


CLIENT = ("import sys; sys.path[:0] = ['tests', '.']; from test_loadbalancing import send_rollouts; "
          "import json; print(json.dumps(send_rollouts(sys.argv[1], int(sys.argv[2]), sys.argv[3])))")


def start_clients(endpoint: str, n: int = 4, per_shape: int = 17) -> list[subprocess.Popen[str]]:
    """`n` client processes, each sending 3 × `per_shape` rollouts of its own (send_rollouts)."""
    return [subprocess.Popen([sys.executable, "-c", CLIENT, endpoint, str(per_shape), f"c{i}-"],
                             cwd=Path(__file__).parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(n)]


def rollouts_sent(clients: list[subprocess.Popen[str]]) -> dict[str, int]:
    """Once every client is done: rollout → spans sent, over all of them."""
    sent: dict[str, int] = {}
    for client in clients:
        out, err = client.communicate(timeout=180)
        assert client.returncode == 0, err[-2000:]
        sent.update(json.loads(out.strip().splitlines()[-1]))
    return sent


def test_four_clients_200_rollouts_a_backend_killed_and_restarted_nothing_lost_none_split(tmp_path):
    backends = [durable_backend(tmp_path, f"b{k}") for k in range(3)]
    with started(tmp_path, backends) as lb:
        clients = start_clients(lb.grpc_endpoint)
        victim = Warehouse.connect(backends[2].query_url)
        wait_for(lambda: victim.sql("SELECT count(*) AS n FROM spans").column("n")[0].as_py() > 0, 60,
                 "the first spans on the backend to kill")
        assert any(c.poll() is None for c in clients)  # mid-run: clients are still sending
        backends[2].proc.send_signal(signal.SIGKILL)  # kill -9
        backends[2].proc.wait()
        time.sleep(2.0)
        backends[2].start()
        sent = rollouts_sent(clients)
        total = sum(sent.values())
        per_backend, duplicates = where_rollouts_landed(backends, total, 90)
        assert lb.stop() == 0
        assert all(b.stop() == 0 for b in backends)
    assert len(sent) == 4 * 3 * 17 and total == 4 * len(sent)
    homes = homes_of(sent, per_backend)
    assert duplicates == 0 and sum(len(p) for p in per_backend) == len(sent)
    assert any(h[0] == 2 for h in homes.values())  # the killed backend had rollouts of its own


def test_the_ring_moves_only_the_keys_of_a_backend_that_left():
    keys = [f"ro-{k}" for k in range(3000)]
    three = Ring(["a:1", "b:1", "c:1"])
    two = Ring(["a:1", "c:1"])
    moved = [k for k in keys if three.backend(k) != two.backend(k)]
    assert moved and all(three.backend(k) == "b:1" for k in moved)
    share = sum(three.backend(k) == "b:1" for k in keys) / len(keys)
    assert 0.2 < share < 0.47  # roughly a third each


def test_the_algorithm_api_over_several_backends(tmp_path):
    """Warehouse.connect([url, url]): rollouts, triplets with one cursor for all backends,
    wait_for_rollouts merged from both event streams, sql from the backend asked."""
    import threading

    from opentelemetry import trace

    from spanpipe import emit

    backends = [backend(tmp_path, f"b{k}") for k in range(2)]
    for b in backends:
        b.start()
    try:
        def agent(b: Collector, rollout: str) -> None:
            emit.configure(endpoint=f"http://{b.grpc_endpoint}", service_name="fed-agent")
            with emit.rollout(rollout_id=rollout):
                with trace.get_tracer("agent").start_as_current_span("chat", attributes={
                        "gen_ai.operation.name": "chat", "gen_ai.response.id": f"resp-{rollout}",
                        "prompt_token_ids": [1], "response_token_ids": [2]}):
                    pass
                emit.emit_reward(1.0)
            emit.shutdown()

        agent(backends[0], "ro-a")
        agent(backends[1], "ro-b")
        fed = Warehouse.connect([b.query_url for b in backends])
        assert set(fed.wait_for_rollouts(["ro-a", "ro-b"], timeout=20)) == {"ro-a", "ro-b"}
        first = fed.triplets(since=0)
        assert sorted(t.rollout_id for t in first) == ["ro-a", "ro-b"] and first.reasons == {}
        assert str(first.cursor).startswith("fed:")
        late = threading.Timer(1.0, agent, (backends[1], "ro-c"))
        late.start()
        assert set(fed.wait_for_rollouts(["ro-c"], timeout=20)) == {"ro-c"}  # from the second stream
        late.join()
        again = fed.triplets(since=first.cursor)
        assert [t.rollout_id for t in again] == ["ro-c"]
        assert [r["rollout_id"] for r in fed.rollouts().to_pylist()] == ["ro-a", "ro-b", "ro-c"]
        assert fed.sql("SELECT count(*) AS n FROM rollouts", backend=1).column("n")[0].as_py() == 2
        assert fed.last_backend == 1
        assert len(fed.trajectories(["ro-a", "ro-b", "ro-c"])) == 3
        assert fed.triplets(["ro-nowhere"]).reasons == {"ro-nowhere": "no spans stored for this rollout"}
    finally:
        for b in backends:
            b.kill()
