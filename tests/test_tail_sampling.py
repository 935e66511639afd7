"""tail_sampling by rollout through a real collector: keep rewarded rollouts and 10% of the rest."""

from __future__ import annotations

import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector import Collector
from spanpipe.spanbatch import SpanBatch
from spanpipe.warehouse import Warehouse
from spanpipe.processors.tail_sampling import TailSamplingConfig, TailSamplingProcessor
from test_sampling_memory import fnv1a32_reference

POLICIES = [
    {"name": "rewarded", "type": "numeric_attribute", "numeric_attribute": {"key": "reward", "min_value": 1e-9}},
    {"name": "sample-rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10, "hash_salt": "s"}},
    {"name": "no-debug", "type": "drop", "drop": {"drop_sub_policy": [
        {"type": "string_attribute", "string_attribute": {"key": "mode", "values": ["debug"]}}]}},
]


def reference_keep(rollout: str, reward: float, mode: str) -> bool:
    if mode == "debug":
        return False  # a drop policy beats any sample policy
    return reward > 0 or (fnv1a32_reference(b"s" + f"rollout:{rollout}".encode()) & 0x3FFF) < int(10 * 163.84)


def test_rollouts_are_kept_or_dropped_whole_and_late_spans_follow(tmp_path):
    procs = {"rollout": {}, "reward": {},
             "tail_sampling": {"group_by": "rollout", "decision_wait": "3s", "completion_grace": "200ms",
                               "check_interval": "50ms", "policies": POLICIES},
             "batch": {"timeout": "20ms"}}
    memory = InMemorySpanExporter()
    expected: dict[str, bool] = {}
    with Collector(tmp_path, processors=procs) as c:
        def provider(rollout: str) -> TracerProvider:
            tp = TracerProvider(resource=Resource.create({"agentlightning.rollout_id": rollout}))
            tp.add_span_processor(SimpleSpanProcessor(memory))
            tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://{c.grpc_endpoint}", insecure=True),
                                                     schedule_delay_millis=10))
            return tp
        providers = {}
        for i in range(40):
            rollout = f"ro-{i:04d}"
            reward = 1.0 if i % 3 == 0 else 0.0
            mode = "debug" if i == 3 else "train"
            expected[rollout] = reference_keep(rollout, reward, mode)
            tp = providers[rollout] = provider(rollout)
            t = tp.get_tracer("agent")
            with t.start_as_current_span("agentlightning.rollout", attributes={"mode": mode}):
                for step in range(2):
                    with t.start_as_current_span("openai.chat.completion", attributes={"gen_ai.operation.name": "chat"}):
                        pass
                with t.start_as_current_span("agentlightning.annotation", attributes={
                        "agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": reward}):
                    pass
            # a second trace of the same rollout, with no end span of its own
            with t.start_as_current_span("tool.call"):
                pass
            tp.force_flush()
        time.sleep(1.5)  # every rollout ended (its rollout span arrived): decided by now
        for rollout, tp in providers.items():
            with tp.get_tracer("agent").start_as_current_span("late.span"):
                pass
        for tp in providers.values():  # shutting one down shuts the shared memory exporter
            tp.shutdown()
        assert c.stop() == 0

    sent: dict[str, set] = {}
    for s in memory.get_finished_spans():
        sent.setdefault(s.resource.attributes["agentlightning.rollout_id"], set()).add(
            (f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}"))
    with Warehouse.open(c.db) as wh:
        rows = wh.sql("SELECT rollout_id, trace_id, span_id FROM spans").to_pylist()
    stored: dict[str, set] = {}
    for r in rows:
        stored.setdefault(r["rollout_id"], set()).add((r["trace_id"], r["span_id"]))
    kept = {r for r, k in expected.items() if k}
    assert set(stored) == kept
    assert 0 < len(kept) < 40 and not expected["ro-0003"]
    for r in kept:
        assert stored[r] == sent[r], f"{r}: every span of a kept rollout, the late one included"


def test_num_traces_bounds_memory_and_evictions_are_counted(caplog):
    cfg = TailSamplingConfig(num_traces=5, decision_wait="60s", policies=[{"type": "always_sample"}])
    got: list[SpanBatch] = []

    class Sink:
        def consume(self, b):
            got.append(b)

    p = TailSamplingProcessor("tail_sampling", cfg, Sink())
    from otlp_requests import make_request
    from spanpipe.otlp import decode_traces
    for _ in range(8):
        p.consume(decode_traces(make_request(2)[0]).batch)
    assert len(p.groups) == 5
    assert sum("evicting undecided group" in r.getMessage() for r in caplog.records) == 3
    p.shutdown()  # decides the rest on shutdown
    assert sum(len(b) for b in got) == 10


def test_while_downstream_refuses_what_was_decided_new_spans_are_refused_and_none_is_lost():
    """The tail sampler holds spans until a decision; when downstream (the writer) refuses what was
    decided, taking more would only grow memory: it refuses too, retryably, until downstream takes
    again."""
    import threading

    import pytest

    from otlp_requests import make_request
    from spanpipe.errors import BackPressureError
    from spanpipe.otlp import decode_traces

    cfg = TailSamplingConfig(decision_wait="10ms", check_interval="10ms", policies=[{"type": "always_sample"}])
    refusing = threading.Event()
    refusing.set()
    got: list[SpanBatch] = []

    class Sink:
        def consume(self, b):
            if refusing.is_set():
                raise BackPressureError("batch: full")
            got.append(b)

    p = TailSamplingProcessor("tail_sampling", cfg, Sink())
    p.start()
    try:
        p.consume(decode_traces(make_request(3)[0]).batch)
        deadline = time.monotonic() + 5
        while not getattr(p, "downstream_refusing", False) and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(BackPressureError, match="downstream is not taking"):
            p.consume(decode_traces(make_request(2)[0]).batch)
        refusing.clear()
        while p.downstream_refusing and time.monotonic() < deadline + 5:
            time.sleep(0.01)
        p.consume(decode_traces(make_request(2)[0]).batch)  # the client's retry
    finally:
        refusing.clear()
        p.shutdown()
    assert sum(len(b) for b in got) == 5


def test_a_groups_end_span_is_seen_whether_its_batch_holds_one_group_or_several():
    """A batch of one rollout is grouped from its columns' distinct values, a mixed one span by
    span: both find the rollout span that ends a group, and put the spans in the same groups."""
    import dataclasses

    from otlp_requests import make_request
    from spanpipe.otlp import decode_traces

    cfg = TailSamplingConfig(group_by="rollout", decision_wait="60s", completion_grace="30s",
                             policies=[{"type": "always_sample"}])
    p = TailSamplingProcessor("tail_sampling", cfg, None)

    def batch(rollouts: list[str | None], ends: bool) -> SpanBatch:
        b = decode_traces(make_request(len(rollouts))[0]).batch
        names = [*b.name[:-1], "agentlightning.rollout" if ends else b.name[-1]]
        return dataclasses.replace(b, name=names).with_columns(rollout_id=rollouts)

    p.consume(batch(["ro-a"] * 3, ends=False))
    p.consume(batch(["ro-b"] * 3, ends=True))
    p.consume(batch(["ro-a", "ro-c", None], ends=True))
    p.consume(batch(["ro-a", "ro-c", "ro-c"], ends=False))
    assert {k: (g.spans, g.complete_at is not None) for k, g in p.groups.items() if not k.startswith("trace:")} == {
        "rollout:ro-a": (5, False), "rollout:ro-b": (3, True), "rollout:ro-c": (3, False)}
    assert [g.complete_at is not None for k, g in p.groups.items() if k.startswith("trace:")] == [True]
    p.shutdown()
