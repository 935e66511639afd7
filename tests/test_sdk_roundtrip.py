"""A real opentelemetry-sdk client sends 10,000 spans; every one lands exactly once, field by field."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from collector import Collector
from spanpipe.warehouse import Warehouse

N_TRACES = 1000  # x 10 spans (root + 3 x llm/tool/subprocess) = 10,000


def make_exporter(protocol: str, c: Collector):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(endpoint=f"http://{c.grpc_endpoint}", insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter(endpoint=f"{c.http_url}/v1/traces")


def emit(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("tests.sdk", "0.9")
    prev_ctx = None
    for t in range(N_TRACES):
        links = [Link(prev_ctx, {"link.n": t})] if prev_ctx else []
        with tracer.start_as_current_span("agent.run", kind=SpanKind.SERVER, links=links,
                                          attributes={"rollout": f"ro-{t}", "step": t}) as root:
            prev_ctx = root.get_span_context()
            for c in range(3):
                with tracer.start_as_current_span("openai.chat.completion", kind=SpanKind.CLIENT) as llm:
                    llm.set_attributes({
                        "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 2**40 + c,
                        "temperature": 0.25, "stream": c % 2 == 0,
                        "stops": ["\n", "END"], "ints": [1, 2, 3], "floats": [0.5, 1.5], "flags": [True, False],
                    })
                    llm.add_event("gen_ai.choice", {"index": c, "message": "ok"})
                    with tracer.start_as_current_span("tool.call", kind=SpanKind.INTERNAL) as tool:
                        if c == 2:
                            tool.set_status(Status(StatusCode.ERROR, "tool failed"))
                        else:
                            tool.set_status(Status(StatusCode.OK))
                        with tracer.start_as_current_span("tool.subprocess", attributes={"depth": 3}):
                            pass


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_spans_land_exactly_once_field_by_field(tmp_path, protocol):
    with Collector(tmp_path, decode_workers="auto") as c:
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": f"sdk-{protocol}",
                                                            "deployment.environment": "test",
                                                            "worker.index": 3}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        provider.add_span_processor(BatchSpanProcessor(make_exporter(protocol, c), max_queue_size=20000,
                                                       max_export_batch_size=512, schedule_delay_millis=50))
        emit(provider)
        assert provider.force_flush(60_000)
        provider.shutdown()
        assert c.stop() == 0

    sent = {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}"): s for s in memory.get_finished_spans()}
    assert len(sent) == N_TRACES * 10
    with Warehouse.open(c.db) as wh:
        rows = wh.sql("SELECT * FROM spans").to_pylist()
    assert len(rows) == len(sent), "every span exactly once"
    kinds = {SpanKind.INTERNAL: "INTERNAL", SpanKind.SERVER: "SERVER", SpanKind.CLIENT: "CLIENT"}
    for row in rows:
        s = sent[(row["trace_id"], row["span_id"])]
        assert row["name"] == s.name
        assert row["parent_span_id"] == (f"{s.parent.span_id:016x}" if s.parent else None)
        assert row["kind"] == kinds[s.kind]
        assert row["start_time_unix_nano"] == s.start_time
        assert row["end_time_unix_nano"] == s.end_time
        assert row["duration_ns"] == s.end_time - s.start_time
        assert row["status_code"] == s.status.status_code.name
        assert row["status_message"] == (s.status.description or "")
        assert row["service_name"] == f"sdk-{protocol}"
        assert row["scope_name"] == "tests.sdk" and row["scope_version"] == "0.9"
        attrs = json.loads(row["attributes"])
        assert attrs == {k: list(v) if isinstance(v, tuple) else v for k, v in s.attributes.items()}
        for k, v in attrs.items():  # types survive, not only values
            assert type(v) is type(s.attributes[k]) or isinstance(s.attributes[k], tuple)
        res = json.loads(row["resource_attributes"])
        assert res["worker.index"] == 3 and res["deployment.environment"] == "test"
        events = json.loads(row["events"])
        assert [(e["name"], e["time_unix_nano"], e["attributes"]) for e in events] == \
            [(e.name, e.timestamp, dict(e.attributes)) for e in s.events]
        links = json.loads(row["links"])
        assert [(lk["trace_id"], lk["span_id"], lk["attributes"]) for lk in links] == \
            [(f"{lk.context.trace_id:032x}", f"{lk.context.span_id:016x}", dict(lk.attributes)) for lk in s.links]
