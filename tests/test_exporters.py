"""debug and file exporters, one pipeline fanning out to several exporters, and the duckdb exporter's
reading of a batch that holds a span twice."""

from __future__ import annotations


import pyarrow as pa

from collector import Collector, free_port
from otlp_requests import make_request
from spanpipe.exporters.duckdb import first_of_each_span
from spanpipe.otlp import decode_traces_json
from spanpipe.warehouse import Warehouse
from test_otlp_http_grpc import grpc_export


def test_fanout_to_duckdb_and_rotated_otlp_json_files(tmp_path):
    g, q = free_port(), free_port()
    out = tmp_path / "otlp" / "spans.jsonl"
    cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{g}"}}}},
        "processors": {"batch": {"timeout": "10ms", "send_batch_size": 20}},
        "exporters": {
            "duckdb": {"path": str(tmp_path / "spans.duckdb"), "query": {"endpoint": f"127.0.0.1:{q}"}},
            "file": {"path": str(out), "rotation": {"max_megabytes": 0.02, "max_backups": 1000}},
        },
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                             "exporters": ["duckdb", "file"]}}},
    }
    sent = set()
    with Collector(tmp_path, cfg, wait_ports=[g, q]) as c:
        for _ in range(30):
            req, ids = make_request(10)
            grpc_export(f"127.0.0.1:{g}", req.SerializeToString())
            sent.update(ids)
        assert c.stop() == 0
    with Warehouse.open(tmp_path / "spans.duckdb") as wh:
        in_db = {(r["trace_id"], r["span_id"]) for r in wh.sql("SELECT trace_id, span_id FROM spans").to_pylist()}
    assert in_db == sent
    files = sorted(out.parent.glob("spans*.jsonl"))
    assert len(files) > 1, "rotated by size"
    in_files = []
    for f in files:
        assert f.stat().st_size <= 0.02 * 1024 * 1024 or f.read_bytes().count(b"\n") == 1
        for line in f.read_bytes().splitlines():
            b = decode_traces_json(line).batch  # every line is one whole OTLP/JSON request
            in_files.extend(zip(b.trace_id, b.span_id))
    assert sorted(in_files) == sorted(sent), "each span in exactly one line"


def test_debug_exporter_prints_each_span_at_normal_verbosity(tmp_path):
    g = free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{g}"}}}},
        "exporters": {"debug": {"verbosity": "detailed", "sampling_initial": 100}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
    }
    with Collector(tmp_path, cfg, wait_ports=[g]) as c:
        req, ids = make_request(3)
        grpc_export(f"127.0.0.1:{g}", req.SerializeToString())
        assert c.stop() == 0
    log = c.log()
    assert "debug: Traces: 3 spans, 1 resources" in log
    for _, span_id in ids:
        assert f"span={span_id}" in log
    assert '"bytes":"AAH+/w=="' in log and "service=test-svc" in log


def test_a_batch_keeps_each_span_once_and_spans_that_only_share_a_span_id():
    """A client's retry merged into the batch of its first attempt repeats (trace id, span id): the
    first row stays. Span ids alone may repeat across traces (they are unique only within one):
    every such span stays."""
    def table(pairs):
        return pa.table({"trace_id": [t for t, _ in pairs], "span_id": [s for _, s in pairs],
                         "name": [f"row{i}" for i in range(len(pairs))]})

    distinct = table([("t1", "s1"), ("t1", "s2"), ("t2", "s3")])
    assert first_of_each_span(distinct) is distinct
    shared_span_ids = table([("t1", "s1"), ("t2", "s1"), ("t3", "s1")])
    assert first_of_each_span(shared_span_ids).column("name").to_pylist() == ["row0", "row1", "row2"]
    retried = table([("t1", "s1"), ("t2", "s1"), ("t1", "s1"), ("t1", "s2")])
    assert first_of_each_span(retried).column("name").to_pylist() == ["row0", "row1", "row3"]
