"""probabilistic_sampler decisions (checked against the algorithm's definition) and memory_limiter."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import requests

from collector import Collector
from otlp_requests import make_request
from spanpipe.warehouse import Warehouse
from spanpipe import admission, cli
from spanpipe.processors import memory_limiter as ml
from spanpipe.processors.probabilistic_sampler import ProbabilisticSampler, ProbabilisticSamplerConfig
from test_otlp_http_grpc import PB, grpc_export


def fnv1a32_reference(data: bytes) -> int:
    """FNV-1a 32-bit, straight from its definition (offset basis 2166136261, prime 16777619)."""
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) % 2**32
    return h


def reference_hash_seed_keep(trace_id: bytes, seed: int, pct: float) -> bool:
    return (fnv1a32_reference(seed.to_bytes(4, "little") + trace_id) & 0x3FFF) < int(pct * 163.84)


def test_fnv_vectors():
    assert fnv1a32_reference(b"") == 0x811C9DC5
    assert fnv1a32_reference(b"a") == 0xE40C292C
    assert fnv1a32_reference(b"foobar") == 0xBF9CF968


TABLE = [  # trace id, seed, percentage, keep — computed by hand from the definition above
    ("00000000000000000000000000000000", 0, 50.0),
    ("ffffffffffffffffffffffffffffffff", 0, 50.0),
    ("0123456789abcdef0123456789abcdef", 22, 25.0),
    ("4bf92f3577b34da6a3ce929d0e0e4736", 1, 10.0),
    ("4bf92f3577b34da6a3ce929d0e0e4736", 2, 90.0),
]


@pytest.mark.parametrize("tid, seed, pct", TABLE)
def test_hash_seed_decisions_match_the_definition(tid, seed, pct):
    p = ProbabilisticSampler("ps", ProbabilisticSamplerConfig(sampling_percentage=pct, hash_seed=seed), None)
    assert p.decide(tid, "")[0] == reference_hash_seed_keep(bytes.fromhex(tid), seed, pct)


def test_hash_seed_rate_and_determinism_over_many_ids():
    p = ProbabilisticSampler("ps", ProbabilisticSamplerConfig(sampling_percentage=30, hash_seed=7), None)
    ids = [os.urandom(16).hex() for _ in range(4000)]
    decisions = [p.decide(t, "")[0] for t in ids]
    assert decisions == [reference_hash_seed_keep(bytes.fromhex(t), 7, 30) for t in ids]
    assert 0.26 < sum(decisions) / len(ids) < 0.34


def test_proportional_keeps_by_last_56_bits_and_records_threshold():
    p = ProbabilisticSampler("ps", ProbabilisticSamplerConfig(sampling_percentage=25, mode="proportional"), None)
    # threshold for 25% is 0.75 * 2^56 = 0xc0000000000000: kept iff the last 56 bits >= it
    keep, state = p.decide("0000000000000000" + "00c0000000000000", "vendor=x")
    assert keep and state == "ot=th:c,vendor=x"
    keep, _ = p.decide("ffffffffffffffff" + "00bfffffffffffff", "")
    assert not keep
    # an incoming th:8 (50%) times 25% gives 12.5%: threshold 0xe0000000000000
    keep, state = p.decide("0000000000000000" + "00e0000000000000", "ot=th:8")
    assert keep and state == "ot=th:e"
    keep, _ = p.decide("0000000000000000" + "00dfffffffffffff", "ot=th:8")
    assert not keep
    eq = ProbabilisticSampler("ps", ProbabilisticSamplerConfig(sampling_percentage=25, mode="equalizing"), None)
    assert eq.decide("0000000000000000" + "00c0000000000000", "ot=th:8") == (True, "ot=th:c")
    # rv in tracestate wins over the trace id
    assert p.decide("0" * 32, "ot=rv:ffffffffffffff")[0]


def test_sampler_in_a_real_collector_keeps_exactly_the_decided_traces(tmp_path):
    sent = {}
    sampler = {"sampling_percentage": 40, "hash_seed": 123}
    with Collector(tmp_path, processors={"probabilistic_sampler": sampler, "batch": {"timeout": "20ms"}}) as c:
        for _ in range(60):
            req, ids = make_request(3)
            if len(sent) % 10 == 0:  # sampling.priority > 0 forces a keep
                for sp in req.resource_spans[0].scope_spans[0].spans:
                    a = sp.attributes.add()
                    a.key, a.value.int_value = "sampling.priority", 1
            grpc_export(c.grpc_endpoint, req.SerializeToString())
            sent[ids[0][0]] = len(sent) % 10 == 0
        assert c.stop() == 0
    with Warehouse.open(c.db) as wh:
        stored = {r["trace_id"] for r in wh.sql("SELECT DISTINCT trace_id FROM spans").to_pylist()}
    expected = {t for t, forced in sent.items()
                if forced or reference_hash_seed_keep(bytes.fromhex(t), 123, 40)}
    assert stored == expected


def test_memory_limiter_measures_what_is_held_not_rss(monkeypatch, caplog):
    rss = [100 * ml.MIB]
    held = [50 * ml.MIB]  # bytes waiting in some queue
    monkeypatch.setattr(ml, "current_rss", lambda: rss[0])
    admission.register_buffer("test-queue", lambda: held[0])
    try:
        cfg = ml.MemoryLimiterConfig(check_interval="1s", limit_mib=300, spike_limit_mib=60)
        assert cfg.limits() == (300 * ml.MIB, 240 * ml.MIB)
        p = ml.MemoryLimiterProcessor("memory_limiter", cfg, None)
        caplog.set_level(logging.INFO)
        p.baseline = 100 * ml.MIB  # the idle footprint, measured at start
        p.check()
        assert not p.refusing()
        held[0] = 150 * ml.MIB  # 100 idle + 150 held > 240
        p.check(); p.check()
        assert p.refusing()
        held[0] = 100 * ml.MIB
        p.check(); p.check()
        assert not p.refusing()
        msgs = [r.getMessage() for r in caplog.records]
        assert sum("Memory usage is above soft limit. Refusing data." in m for m in msgs) == 1
        assert sum("back within limits" in m for m in msgs) == 1
        # RSS kept by allocators after an overload does not count: nothing held, nothing refused.
        held[0] = 0
        rss[0] = 900 * ml.MIB
        p.check()
        assert not p.refusing()
        # A request is admitted for decoding only if its worst case fits what is left.
        admission.register(p)
        try:
            held[0] = 100 * ml.MIB
            with admission.decoding(b"\x01" * ml.MIB):  # ordinary bytes: 8 MiB reserved
                assert admission.held_bytes() == 108 * ml.MIB
            with pytest.raises(admission.BackPressureError):
                with admission.decoding(b"\x01" * 13 * ml.MIB):  # 104 MiB: 100 + 100 + 104 > 300
                    pass
            with pytest.raises(admission.RequestTooLargeForMemory):  # empty sub-messages: 40x
                with admission.decoding(b"\x0a\x00" * (4 * ml.MIB)):  # could never fit under 300 MiB
                    pass
            assert admission.held_bytes() == 100 * ml.MIB
        finally:
            admission.unregister(p)
    finally:
        admission.unregister_buffer("test-queue")


def test_memory_limiter_config_errors():
    with pytest.raises(ValueError):
        ml.MemoryLimiterConfig(check_interval="1s", limit_mib=100, spike_limit_mib=100).validate_config()
    with pytest.raises(ValueError):
        ml.MemoryLimiterConfig(check_interval="1s").validate_config()


def test_collector_over_its_memory_limit_refuses_with_retryable_codes(tmp_path):
    # 10 MiB is below any Python process: the limiter refuses from the first check.
    limiter = {"check_interval": "100ms", "limit_mib": 10, "spike_limit_mib": 2}
    with Collector(tmp_path, processors={"memory_limiter": limiter, "batch": {}}) as c:
        req, _ = make_request(2)
        with pytest.raises(grpc.RpcError) as err:
            grpc_export(c.grpc_endpoint, req.SerializeToString())
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        r = requests.post(f"{c.http_url}/v1/traces", data=req.SerializeToString(), headers=PB, timeout=10)
        assert r.status_code == 429 and r.headers.get("Retry-After")
        assert c.stop() == 0
    assert c.log().count("Memory usage is above soft limit. Refusing data.") == 1


_FREED_BY_AN_IDLE_THREAD = """
import sys, threading, time
from spanpipe.cli import return_freed_memory_if_limited
return_freed_memory_if_limited(sys.argv[1])  # as `spanpipe run --config <it>` does, before pyarrow loads
import numpy as np, pyarrow as pa, pyarrow.compute as pc
def rss(): return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
start = rss(); freed = threading.Event(); leave = threading.Event()
def handle_batches():  # as a gRPC or batch-flush thread: allocate, free, then wait idle
    source = pa.array(np.arange(32768, dtype=np.int64))
    arrays = [pc.add(source, i) for i in range(1000)]  # 250 MiB in Arrow's pool
    del arrays
    freed.set(); leave.wait()
t = threading.Thread(target=handle_batches); t.start(); freed.wait(); time.sleep(0.3)
print(pa.default_memory_pool().backend_name, rss() - start)
leave.set(); t.join()
"""

_LIMITED = """
processors:
  memory_limiter: {check_interval: 1s, limit_mib: 300}
  batch:
service:
  pipelines:
    traces: {receivers: [otlp], processors: [memory_limiter, batch], exporters: [duckdb]}
"""


def _resident_after_an_idle_thread_freed_250_mib(config: Path) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMALLOC_")}
    out = subprocess.run([sys.executable, "-c", _FREED_BY_AN_IDLE_THREAD, str(config)], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    assert out[0] == "mimalloc"
    return int(out[1])


def test_a_collector_with_a_memory_limiter_returns_what_an_idle_thread_freed(tmp_path):
    """Arrow's mimalloc kept what a thread freed until that thread allocated again: 250 MiB freed
    by a thread gone idle stayed resident (~380 MiB above the start), unseen by the limiter's
    accounting and counted by the kernel. A collector without a limiter keeps the faster default."""
    limited = tmp_path / "limited.yaml"
    limited.write_text(_LIMITED)
    unlimited = tmp_path / "unlimited.yaml"
    unlimited.write_text(_LIMITED.replace("memory_limiter, batch", "batch"))
    named = tmp_path / "named.yaml"
    named.write_text(_LIMITED.replace("memory_limiter", "memory_limiter/edge").replace(  # pipelines before it:
        "  pipelines:\n", "  pipelines:\n    metrics:\n    logs: {receivers: [otlp], exporters: [duckdb]}\n"))
    assert cli.uses_memory_limiter(str(limited)) and cli.uses_memory_limiter(str(named))
    assert not cli.uses_memory_limiter(str(unlimited))
    assert cli.uses_memory_limiter(str(tmp_path / "missing.yaml")) is False
    kept = _resident_after_an_idle_thread_freed_250_mib(limited)
    assert kept < 100, f"{kept} MiB of 250 MiB freed still resident"
    assert _resident_after_an_idle_thread_freed_250_mib(unlimited) > 200
