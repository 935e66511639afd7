"""Operating the collector: Prometheus metrics that match what was sent, health_check, bearer-token
auth on receivers / query API / exporters, TLS on both receivers, JSON logs and the progress line."""

from __future__ import annotations

import datetime
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import orjson
import pytest
import requests
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from collector import Collector, config_error, free_port, grpc_export
from otlp_requests import make_request
from spanpipe.warehouse import Warehouse, WarehouseError
from collector import wait_for
from test_delivery import forwarder, scrape, stored_ids

TOKEN = "s3cret-token"


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus exposition (labels in any order)."""
    for m in re.finditer(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", text, re.M):
        if dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) == labels:
            return float(m.group(2))
    raise AssertionError(f"{name}{labels} not in the metrics")


def test_metrics_match_what_was_sent(tmp_path):
    c = Collector(tmp_path)
    c.config["processors"] = {"memory_limiter": {"check_interval": "100ms", "limit_mib": 4000},
                              "batch": {"timeout": "50ms"}}
    c.config["service"]["pipelines"]["traces"]["processors"] = ["memory_limiter", "batch"]
    with c.rewrite():
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=Resource.create({"service.name": "metrics-test"}))
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://{c.grpc_endpoint}", insecure=True), max_queue_size=10000))
        tracer = provider.get_tracer("t")
        for i in range(1234):
            with tracer.start_as_current_span(f"s{i % 7}"):
                pass
        assert provider.force_flush(30_000)
        provider.shutdown()
        req, _ = make_request(5, bad_ids=3)  # 5 accepted, 3 refused (partial success)
        assert grpc_export(c.grpc_endpoint, req)[0] == "OK"
        sent = 1234 + 5
        wait_for(lambda: "exporter_sent_spans_total" in scrape(c)
                 and metric(scrape(c), "otelcol_exporter_sent_spans_total", exporter="duckdb") == sent,
                 20, "the exporter to catch up")
        text = scrape(c)
        assert metric(text, "otelcol_receiver_accepted_spans_total", receiver="otlp") == sent
        assert metric(text, "otelcol_receiver_refused_spans_total", receiver="otlp") == 3
        for proc in ("memory_limiter", "batch"):
            assert metric(text, "otelcol_processor_incoming_items_total", processor=proc) == sent
            assert metric(text, "otelcol_processor_outgoing_items_total", processor=proc) == sent
        assert metric(text, "otelcol_exporter_queue_capacity", exporter="duckdb") == 2  # the duckdb exporter's default queue_size
        assert metric(text, "otelcol_exporter_queue_size", exporter="duckdb") == 0
        assert metric(text, "spanpipe_warehouse_rows", exporter="duckdb") == sent
        assert "otelcol_exporter_send_failed_spans" not in text
        assert c.stop() == 0
    assert len(stored_ids(c.db)) == sent


def test_health_check_200_when_ready_503_while_draining(tmp_path):
    """Ready → 200 with otelcol's body; after SIGTERM, while an exporter drains towards a backend
    that is down, 503."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    c = forwarder(tmp_path, {"otlp": {"endpoint": f"127.0.0.1:{free_port()}", "tls": {"insecure": True},
                                      "sending_queue": {"drain_timeout": "4s"},
                                      "retry_on_failure": {"initial_interval": "200ms", "max_interval": "500ms"}}},
                  extensions={"health_check": {"endpoint": f"127.0.0.1:{port}", "path": "/health"}})
    with c:
        resp = requests.get(url, timeout=5)
        assert resp.status_code == 200
        body = resp.json()
        assert body["status"] == "Server available" and "upSince" in body and "uptime" in body
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 404
        assert grpc_export(c.grpc_endpoint, make_request(3)[0])[0] == "OK"
        c.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: requests.get(url, timeout=5).status_code == 503, 5, "503 while draining")
        assert requests.get(url, timeout=5).json() == {"status": "Server not available"}
        assert c.stop() == 0


def with_auth(c: Collector) -> Collector:
    c.config["extensions"] = {"bearertokenauth": {"token": TOKEN}}
    c.config["service"]["extensions"] = ["bearertokenauth"]
    for proto in ("grpc", "http"):
        c.config["receivers"]["otlp"]["protocols"][proto]["auth"] = {"authenticator": "bearertokenauth"}
    c.config["exporters"]["duckdb"]["query"]["auth"] = {"authenticator": "bearertokenauth"}
    return c.rewrite()


def test_bearer_token_auth_on_receivers_query_api_and_exporter(tmp_path):
    (tmp_path / "b").mkdir()
    b = with_auth(Collector(tmp_path / "b"))
    a = forwarder(tmp_path / "a", {"otlp": {"endpoint": b.grpc_endpoint, "tls": {"insecure": True},
                                            "auth": {"authenticator": "bearertokenauth"}}},
                  extensions={"bearertokenauth": {"token": TOKEN}})
    with b, a:
        req, ids = make_request(4)
        assert grpc_export(b.grpc_endpoint, req)[0] == "UNAUTHENTICATED"
        assert grpc_export(b.grpc_endpoint, req, token="wrong")[0] == "UNAUTHENTICATED"
        assert grpc_export(b.grpc_endpoint, req, token=TOKEN)[0] == "OK"
        body = req.SerializeToString()
        headers = {"Content-Type": "application/x-protobuf"}
        assert requests.post(f"{b.http_url}/v1/traces", data=body, headers=headers, timeout=5).status_code == 401
        assert requests.post(f"{b.http_url}/v1/traces", data=body, timeout=5,
                             headers={**headers, "Authorization": f"Bearer {TOKEN}"}).status_code == 200
        # Through the forwarder, whose exporter carries the token.
        req2, ids2 = make_request(6)
        assert grpc_export(a.grpc_endpoint, req2)[0] == "OK"
        with pytest.raises(WarehouseError, match="401|token"):
            Warehouse.connect(b.query_url).sql("SELECT 1")
        with Warehouse.connect(b.query_url, token=TOKEN) as wh:
            wait_for(lambda: wh.sql("SELECT count(*) AS n FROM spans").column("n")[0].as_py() == 10, 20,
                     "the forwarded spans")
        assert metric(scrape(b), "otelcol_receiver_refused_requests_total", receiver="otlp",
                      reason="unauthenticated") == 3
        assert a.stop() == 0
        assert b.stop() == 0
    assert sorted(stored_ids(b.db)) == sorted(ids + ids2)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_on_both_receivers_and_the_otlp_exporter(tmp_path):
    cert, key = make_certificate(tmp_path)
    (tmp_path / "b").mkdir()
    b = Collector(tmp_path / "b")
    for proto in ("grpc", "http"):
        b.config["receivers"]["otlp"]["protocols"][proto]["tls"] = {"cert_file": str(cert), "key_file": str(key)}
    b.rewrite()
    a = forwarder(tmp_path / "a", {"otlp": {"endpoint": b.grpc_endpoint, "tls": {"ca_file": str(cert)}}})
    with b, a:
        req, ids = make_request(3)
        creds = grpc.ssl_channel_credentials(cert.read_bytes())
        assert grpc_export(b.grpc_endpoint, req, credentials=creds)[0] == "OK"
        assert grpc_export(b.grpc_endpoint, req, timeout=3)[0] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")  # plaintext
        req2, ids2 = make_request(2)
        resp = requests.post(f"https://127.0.0.1:{b.http_port}/v1/traces", data=req2.SerializeToString(),
                             headers={"Content-Type": "application/x-protobuf"}, verify=str(cert), timeout=5)
        assert resp.status_code == 200
        req3, ids3 = make_request(4)
        assert grpc_export(a.grpc_endpoint, req3)[0] == "OK"  # a → b over TLS
        with Warehouse.connect(b.query_url) as wh:
            wait_for(lambda: wh.sql("SELECT count(*) AS n FROM spans").column("n")[0].as_py() == 9, 20,
                     "the spans sent over TLS")
        assert a.stop() == 0
        assert b.stop() == 0
    assert sorted(stored_ids(b.db)) == sorted(ids + ids2 + ids3)


def test_json_logs_and_the_progress_line(tmp_path):
    """The progress line counts each exporter's spans (two exporters: not 60 written for 30 spans)
    and says nothing while the collector is idle."""
    c = Collector(tmp_path)
    c.config["service"]["telemetry"]["logs"] = {"level": "info", "encoding": "json", "progress_interval": "300ms"}
    c.config["exporters"]["file"] = {"path": str(tmp_path / "copy.json")}
    c.config["service"]["pipelines"]["traces"]["exporters"].append("file")
    with c.rewrite():
        for _ in range(3):
            assert grpc_export(c.grpc_endpoint, make_request(10)[0])[0] == "OK"
        wait_for(lambda: "written: duckdb 30, file 30" in c.log(), 10, "a progress line counting the spans")
        time.sleep(2)  # idle: about six intervals
        assert c.stop() == 0
    lines = [orjson.loads(line) for line in c.log().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    progress = [line["msg"] for line in lines if line["msg"].startswith("progress:")]
    assert any("(30 total), written: duckdb 30, file 30" in p and "queue depth 0" in p and "RSS" in p
               for p in progress)
    final = [p for p in progress if "written: duckdb 30, file 30" in p and "queue depth 0" in p]
    assert len(final) == 1, progress  # once the same, nothing more is said while idle


def test_bad_operations_config_is_refused_with_its_path(tmp_path):
    c = Collector(tmp_path)
    c.config["service"]["telemetry"]["metrics"]["level"] = "loud"
    c.config["exporters"]["duckdb"]["sending_queue"] = {"storage": "file_storage", "queue_sise": 3}
    c.config["receivers"]["otlp"]["protocols"]["grpc"]["auth"] = {"authenticator": "bearertokenauth"}
    c.rewrite()
    error = config_error(c.config_path)
    assert "service::telemetry::metrics: level: use none, basic, normal or detailed" in error
    assert "exporters::duckdb::sending_queue: unknown key 'queue_sise'" in error
    c.config["exporters"]["duckdb"]["sending_queue"] = {"storage": "file_storage"}
    c.config["service"]["telemetry"]["metrics"]["level"] = "basic"
    c.rewrite()
    error = config_error(c.config_path)
    assert "exporters::duckdb::sending_queue::storage: extension 'file_storage' must be configured" in error
    assert "receivers::otlp::protocols::grpc::auth::authenticator: extension 'bearertokenauth'" in error


def test_a_running_collector_collects_garbage_rarely_and_says_how_often(tmp_path):
    """Each request's columns and derivations are containers that live until their batch is written;
    collected every 700 allocations (CPython's default), they were walked again and again (1.1 s of
    GIL-held time per 15 s under load). The collector collects its first generation every 20,000
    allocations and exposes the count (python_gc_collections_total)."""
    c = Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "50ms"}},
                  decode_workers="auto")
    with c:
        first = metric(scrape(c), "python_gc_collections_total", generation="0")
        sent = 0
        for _ in range(40):
            request, _ = make_request(512)
            assert grpc_export(c.grpc_endpoint, request)[0] == "OK"
            sent += 512
        wait_for(lambda: metric(scrape(c), "otelcol_exporter_sent_spans_total", exporter="duckdb") == sent,
                 30, "the exporter to catch up")
        collections = metric(scrape(c), "python_gc_collections_total", generation="0") - first
        assert c.stop() == 0
    assert len(stored_ids(c.db)) == sent
    assert collections <= 10, f"{collections:.0f} first-generation collections for 40 requests"
