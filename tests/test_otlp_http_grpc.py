"""OTLP over the wire: encodings, retries, partial success and bad input, against a real collector."""

from __future__ import annotations

import gzip
import json
import os

import grpc
import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collector import Collector, free_port
from otlp_requests import EXPECTED_ALL_TYPES, make_request
from spanpipe.otlp_encode import to_otlp_json
from spanpipe.otlp import decode_traces
from spanpipe.warehouse import Warehouse

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PB = {"Content-Type": "application/x-protobuf"}


def grpc_export(endpoint: str, payload: bytes, timeout: float = 10) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(endpoint) as ch:
        call = ch.unary_unary(EXPORT, request_serializer=None,
                              response_deserializer=ExportTraceServiceResponse.FromString)
        return call(payload, timeout=timeout)


def rows(c: Collector, where: str = "") -> list[dict]:
    return Warehouse.connect(c.query_url).sql(
        f"SELECT * EXCLUDE (duration_ns) FROM spans {where} ORDER BY span_id").to_pylist()


def wait_rows(c: Collector, n: int, where: str = "", timeout: float = 10) -> list[dict]:
    import time
    deadline = time.monotonic() + timeout
    while True:
        got = rows(c, where)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@pytest.fixture
def collector(tmp_path):
    with Collector(tmp_path) as c:
        yield c
        assert c.stop() == 0


def test_all_anyvalue_types_are_kept_with_their_types(collector):
    req, ids = make_request(3)
    grpc_export(collector.grpc_endpoint, req.SerializeToString())
    got = wait_rows(collector, 3)
    assert sorted((r["trace_id"], r["span_id"]) for r in got) == sorted(ids)
    for r in got:
        assert json.loads(r["attributes"]) == EXPECTED_ALL_TYPES
        attrs = json.loads(r["attributes"])
        assert isinstance(attrs["whole_double"], float) and isinstance(attrs["int"], int)
        assert json.loads(r["resource_attributes"]) == {"service.name": "test-svc", "host.cores": 2}
        assert r["end_time_unix_nano"] - r["start_time_unix_nano"] == 1_000_000_007
        assert r["trace_state"] == "k=v"
        ev = json.loads(r["events"])
        assert ev[0]["name"] == "gen_ai.user.message" and ev[0]["attributes"] == {"content": "hi", "n": 7}
        assert json.loads(r["links"])[0]["attributes"] == {"link.kind": "follows"}
    # exact int64 through SQL too
    big = Warehouse.connect(collector.query_url).sql(
        "SELECT DISTINCT CAST(attributes->>'int' AS BIGINT) v FROM spans").to_pylist()
    assert big == [{"v": 2**63 - 1}]


def test_otlp_json_lands_the_same_rows_as_protobuf(tmp_path):
    """Two receivers, two pipelines, two warehouses: the same request in each encoding."""
    db_pb, db_js = tmp_path / "pb.duckdb", tmp_path / "js.duckdb"
    g, h, q1, q2 = free_port(), free_port(), free_port(), free_port()
    cfg = {
        "receivers": {"otlp/pb": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{g}"}}},
                      "otlp/json": {"protocols": {"http": {"endpoint": f"127.0.0.1:{h}"}}}},
        "processors": {"batch": {"timeout": "20ms"}},
        "exporters": {"duckdb/pb": {"path": str(db_pb), "query": {"endpoint": f"127.0.0.1:{q1}"}},
                      "duckdb/json": {"path": str(db_js), "query": {"endpoint": f"127.0.0.1:{q2}"}}},
        "service": {"pipelines": {
            "traces/pb": {"receivers": ["otlp/pb"], "processors": ["batch"], "exporters": ["duckdb/pb"]},
            "traces/json": {"receivers": ["otlp/json"], "processors": ["batch"], "exporters": ["duckdb/json"]}}},
    }
    req, ids = make_request(5)
    c = Collector(tmp_path, cfg, wait_ports=[g, h, q1, q2]).start()
    try:
        grpc_export(f"127.0.0.1:{g}", req.SerializeToString())
        body = json.dumps(to_otlp_json(decode_traces(req).batch)).encode()
        r = requests.post(f"http://127.0.0.1:{h}/v1/traces", data=body,
                          headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("application/json")
    finally:
        assert c.stop() == 0
    with Warehouse.open(db_pb) as a, Warehouse.open(db_js) as b:
        pb_rows = a.sql("SELECT * FROM spans ORDER BY span_id").to_pylist()
        js_rows = b.sql("SELECT * FROM spans ORDER BY span_id").to_pylist()
    assert len(pb_rows) == 5
    assert pb_rows == js_rows


def test_hand_written_otlp_json_with_hex_ids_and_enum_ints(collector):
    tid, sid = os.urandom(16).hex(), os.urandom(8).hex()
    doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
           "scopeSpans": [{"scope": {"name": "s"}, "spans": [{
               "traceId": tid, "spanId": sid, "name": "j", "kind": 3,
               "startTimeUnixNano": "1700000000000000001", "endTimeUnixNano": "1700000000000000009",
               "attributes": [{"key": "n", "value": {"intValue": "9007199254740993"}},
                              {"key": "b", "value": {"bytesValue": "AAE="}}],
               "status": {"code": 2, "message": "x"}, "unknownField": 1}]}]}]}
    r = requests.post(f"{collector.http_url}/v1/traces", json=doc, timeout=10)
    assert r.status_code == 200, r.text
    (row,) = wait_rows(collector, 1)
    assert (row["trace_id"], row["span_id"], row["kind"], row["status_code"]) == (tid, sid, "CLIENT", "ERROR")
    assert row["start_time_unix_nano"] == 1700000000000000001
    assert json.loads(row["attributes"]) == {"n": 9007199254740993, "b": "AAE="}


def test_retried_request_does_not_duplicate_rows(collector):
    req, ids = make_request(4)
    payload = req.SerializeToString()
    grpc_export(collector.grpc_endpoint, payload)
    grpc_export(collector.grpc_endpoint, payload)  # a client retry of the same request
    r = requests.post(f"{collector.http_url}/v1/traces", data=payload, headers=PB, timeout=10)
    assert r.status_code == 200
    import time
    time.sleep(0.5)
    got = rows(collector)
    assert sorted((r["trace_id"], r["span_id"]) for r in got) == sorted(ids)


def test_gzip_body_is_accepted(collector):
    req, ids = make_request(2)
    r = requests.post(f"{collector.http_url}/v1/traces", data=gzip.compress(req.SerializeToString()),
                      headers={**PB, "Content-Encoding": "gzip"}, timeout=10)
    assert r.status_code == 200, r.text
    assert len(wait_rows(collector, 2)) == 2


def test_invalid_ids_are_rejected_per_span_with_partial_success(collector):
    req, ids = make_request(3, bad_ids=2)
    resp = grpc_export(collector.grpc_endpoint, req.SerializeToString())
    assert resp.partial_success.rejected_spans == 2
    assert "span_id must be 8 bytes" in resp.partial_success.error_message
    req2, ids2 = make_request(2, bad_ids=1)
    r = requests.post(f"{collector.http_url}/v1/traces", data=req2.SerializeToString(), headers=PB, timeout=10)
    assert r.status_code == 200
    body = ExportTraceServiceResponse.FromString(r.content)
    assert body.partial_success.rejected_spans == 1
    got = wait_rows(collector, 5)
    assert sorted((r["trace_id"], r["span_id"]) for r in got) == sorted(ids + ids2)


def test_bad_input_gets_the_right_code_and_touches_nothing(collector):
    req, ids = make_request(3)
    grpc_export(collector.grpc_endpoint, req.SerializeToString())
    before = wait_rows(collector, 3)
    payload = req.SerializeToString()

    # gRPC: garbage and truncated protobuf → INVALID_ARGUMENT
    for bad in (b"\xff\xff\xff\xffgarbage", payload[: len(payload) // 2]):
        with pytest.raises(grpc.RpcError) as err:
            grpc_export(collector.grpc_endpoint, bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cannot decode" in err.value.details()
    # gRPC: above max_recv_msg_size_mib (4 MiB default) → RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as err:
        grpc_export(collector.grpc_endpoint, b"\x0a" + b"\x00" * (5 * 1024 * 1024))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    url = f"{collector.http_url}/v1/traces"
    r = requests.post(url, data=b"\xff\xfe garbage", headers=PB, timeout=10)
    assert r.status_code == 400
    assert "cannot decode" in status_pb2.Status.FromString(r.content).message
    r = requests.post(url, data=payload[:-7], headers=PB, timeout=10)
    assert r.status_code == 400
    r = requests.post(url, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "OTLP/JSON" in r.json()["message"]
    r = requests.post(url, data=payload, headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415
    r = requests.get(url, timeout=10)
    assert r.status_code == 405
    r = requests.post(url, data=b"\x00" * (21 * 1024 * 1024), headers=PB, timeout=30)
    assert r.status_code == 413
    bomb = gzip.compress(b"\x00" * (25 * 1024 * 1024))  # small on the wire, too big decompressed
    r = requests.post(url, data=bomb, headers={**PB, "Content-Encoding": "gzip"}, timeout=30)
    assert r.status_code == 413
    r = requests.post(url, data=payload, headers={**PB, "Content-Encoding": "br"}, timeout=10)
    assert r.status_code == 400
    # A 16-byte span id alone: the request is OK, the span rejected
    only_bad, _ = make_request(0, bad_ids=1)
    assert grpc_export(collector.grpc_endpoint, only_bad.SerializeToString()).partial_success.rejected_spans == 1

    # still serving, and nothing stored was touched
    req2, ids2 = make_request(2)
    r = requests.post(url, data=req2.SerializeToString(), headers=PB, timeout=10)
    assert r.status_code == 200
    after = wait_rows(collector, 5)
    assert [r for r in after if (r["trace_id"], r["span_id"]) in set(ids)] == before
    assert len(after) == 5
