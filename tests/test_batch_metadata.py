"""batch `metadata_keys`: one batch per tenant header, through a real collector and real SDK clients."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from collector import Collector
from otlp_requests import make_request
from spanpipe.errors import BackPressureError
from spanpipe.otlp import decode_traces_protobuf
from spanpipe.processors.batch import BatchConfig, BatchProcessor


def tenant_exporter(protocol: str, c: Collector, tenant: str):
    """An SDK exporter sending an `x-tenant` header (what OTEL_EXPORTER_OTLP_HEADERS sets)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(endpoint=f"http://{c.grpc_endpoint}", insecure=True, headers={"x-tenant": tenant})
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    return HttpExporter(endpoint=f"{c.http_url}/v1/traces", headers={"x-tenant": tenant})


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_one_batch_per_tenant(tmp_path, protocol):
    c = Collector(tmp_path)
    out = tmp_path / "batches.jsonl"
    cfg = c.config
    for proto in ("grpc", "http"):
        cfg["receivers"]["otlp"]["protocols"][proto]["include_metadata"] = True
    cfg["processors"] = {"batch": {"timeout": "500ms", "send_batch_size": 100000, "metadata_keys": ["X-Tenant"]}}
    cfg["exporters"]["file"] = {"path": str(out)}
    cfg["service"]["pipelines"]["traces"]["exporters"] = ["duckdb", "file"]
    with c.rewrite():
        providers = []
        for tenant in ("team-a", "team-b", "team-c"):
            exporter = tenant_exporter(protocol, c, tenant)
            provider = TracerProvider(resource=Resource.create({"service.name": tenant}))
            provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=50, schedule_delay_millis=20))
            providers.append(provider)
        for i in range(300):
            with providers[i % 3].get_tracer("t").start_as_current_span(f"s{i}"):
                pass
        for p in providers:
            assert p.force_flush(30_000)
            p.shutdown()
        assert c.stop() == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    seen: dict[str, int] = {}
    for line in lines:
        services = {attr["value"]["stringValue"] for rs in line["resourceSpans"]
                    for attr in rs["resource"]["attributes"] if attr["key"] == "service.name"}
        assert len(services) == 1, f"a batch mixed tenants: {services}"
        tenant = services.pop()
        seen[tenant] = seen.get(tenant, 0) + sum(len(ss["spans"]) for rs in line["resourceSpans"]
                                                 for ss in rs["scopeSpans"])
    assert seen == {"team-a": 100, "team-b": 100, "team-c": 100}
    assert len(lines) < 30, "spans were batched, not passed one request at a time"


def test_metadata_cardinality_limit_is_a_retryable_refusal():
    sent = []

    class Sink:
        def consume(self, batch):
            sent.append(batch)

    proc = BatchProcessor("batch", BatchConfig(timeout="1h", metadata_keys=["tenant"], metadata_cardinality_limit=2),
                          Sink())  # type: ignore[arg-type]
    proc.start()
    try:
        def batch(tenant: str):
            b = decode_traces_protobuf(make_request(2)[0].SerializeToString()).batch
            b.client_metadata = {"tenant": (tenant,)}
            return b

        for tenant in ("a", "b", "a"):
            proc.consume(batch(tenant))
        with pytest.raises(BackPressureError, match="metadata_cardinality_limit"):
            proc.consume(batch("c"))
    finally:
        proc.shutdown()
    assert sorted((x.client_metadata["tenant"], len(x)) for x in sent) == [(("a",), 4), (("b",), 2)]
