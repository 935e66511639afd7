"""OTLP logs: real OTel SDK log exporters (gRPC and HTTP) into a real collector's `logs` table,
joined to their span on the read side; bad requests refused without losing the good ones."""

from __future__ import annotations

import gzip
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from spanpipe.registry import Registry
from spanpipe.config import parse_config
from spanpipe.errors import ConfigError
from spanpipe.warehouse.warehouse import Warehouse
from tests.collector import Collector, default_config, free_port, grpc_export, wait_for

REGISTRY = Registry.from_entry_points()


def _sdk_logs(endpoint: str, protocol: str):
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        exporter = OTLPLogExporter(endpoint=endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        exporter = OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")
    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=64))
    return provider


def test_sdk_log_records_land_by_id_and_join_their_span(tmp_path: Path) -> None:
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    with Collector(tmp_path, logs=True) as c:
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=c.grpc_endpoint, insecure=True)))
        tracer = tracer_provider.get_tracer("t")
        sent: dict[str, tuple[str, str]] = {}
        for protocol, endpoint in (("grpc", c.grpc_endpoint), ("http", c.http_url)):
            provider = _sdk_logs(endpoint, protocol)
            logger = provider.get_logger("agent")
            for i in range(150):
                with tracer.start_as_current_span("chat fake-model") as span:
                    span.set_attribute("gen_ai.operation.name", "chat")
                    span.set_attribute("gen_ai.system", "openai")
                    key = f"{protocol}-{i}"
                    logger.emit(LogRecord(event_name="gen_ai.user.message", body={"content": f"q {key}"},
                                          attributes={"gen_ai.system": "openai"}, severity_number=SeverityNumber.INFO))
                    logger.emit(LogRecord(event_name="gen_ai.choice", attributes={"gen_ai.system": "openai"},
                                          body={"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": f"a {key}"}}))
                    ctx = span.get_span_context()
                    sent[key] = (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
            provider.shutdown()
        tracer_provider.shutdown()
        wh = Warehouse.connect(c.query_url)
        rows = wh.sql("SELECT trace_id, span_id, event_name, body->>'content' AS content, "
                      "body->'message'->>'content' AS answer, severity_number FROM logs").to_pylist()
        assert len(rows) == 2 * len(sent) == 600
        by_key = {(r["content"] or r["answer"])[2:]: r for r in rows}
        for key, ids in sent.items():
            assert (by_key[key]["trace_id"], by_key[key]["span_id"]) == ids
        # The read side joins the records to their span: llm_calls has the messages.
        deadline = time.monotonic() + 20
        while wh.sql("SELECT count(*) AS n FROM llm_calls").column("n")[0].as_py() < len(sent):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        calls = {(r["trace_id"], r["span_id"]): r for r in wh.sql(
            "SELECT trace_id, span_id, input_messages, output_messages, convention FROM llm_calls").to_pylist()}
        for key, ids in sent.items():
            call = calls[ids]
            assert call["convention"] == "gen_ai_events"
            assert f'"q {key}"' in call["input_messages"] and f'"a {key}"' in call["output_messages"]
        assert c.stop() == 0


def test_bad_log_requests_are_refused_and_good_ones_kept(tmp_path: Path) -> None:
    with Collector(tmp_path, logs=True) as c:
        good = ExportLogsServiceRequest()
        rec = good.resource_logs.add().scope_logs.add().log_records.add()
        rec.time_unix_nano, rec.event_name = 1_700_000_000_000_000_000, "gen_ai.user.message"
        rec.trace_id, rec.span_id = bytes(range(16)), bytes(range(8))
        rec.body.string_value = "kept"
        bad = rec.__class__()
        bad.CopyFrom(rec)
        bad.span_id, bad.body.string_value = b"\x01\x02", "bad id"
        good.resource_logs[0].scope_logs[0].log_records.append(bad)

        code, resp = grpc_export(c.grpc_endpoint, good, signal="logs")
        assert code == "OK" and resp.partial_success.rejected_log_records == 1
        assert "span_id" in resp.partial_success.error_message
        code, details = grpc_export(c.grpc_endpoint, b"\xff\x00garbage", signal="logs")
        assert code == "INVALID_ARGUMENT" and "ExportLogsServiceRequest" in details

        def post(body: bytes, ctype: str, encoding: str | None = None) -> tuple[int, bytes]:
            headers = {"Content-Type": ctype, **({"Content-Encoding": encoding} if encoding else {})}
            req = urllib.request.Request(f"{c.http_url}/v1/logs", data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        assert post(b"not json", "application/json")[0] == 400
        assert post(b"x", "text/plain")[0] == 415
        json_body = (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1700000000000000001",'
                     b'"traceId":"000102030405060708090a0b0c0d0e0f","spanId":"0001020304050607",'
                     b'"eventName":"gen_ai.choice","body":{"stringValue":"json kept"}}]}]}]}')
        assert post(gzip.compress(json_body), "application/json", "gzip")[0] == 200
        # A retried export is stored once.
        assert post(json_body, "application/json")[0] == 200
        wh = Warehouse.connect(c.query_url)

        def bodies() -> list[str]:
            return sorted(r["b"] for r in wh.sql("SELECT body->>'$' AS b FROM logs").to_pylist())

        wait_for(lambda: len(bodies()) >= 2, 15, "the two good records")  # acknowledged, then batched
        time.sleep(0.3)  # a duplicate would land with the same batch
        assert bodies() == ["json kept", "kept"]
        assert c.stop() == 0


def test_a_receiver_in_no_logs_pipeline_does_not_serve_logs(tmp_path: Path) -> None:
    with Collector(tmp_path) as c:  # a traces pipeline only
        code, _ = grpc_export(c.grpc_endpoint, ExportLogsServiceRequest(), signal="logs")
        assert code == "UNIMPLEMENTED"
        req = urllib.request.Request(f"{c.http_url}/v1/logs", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 404
        assert c.stop() == 0


def test_logs_pipeline_refuses_components_without_logs(tmp_path: Path) -> None:
    cfg = default_config(tmp_path / "spans.duckdb", free_port(), free_port(), free_port())
    cfg["exporters"]["parquet"] = {"path": str(tmp_path / "lake")}
    cfg["processors"]["rollout"] = {}
    cfg["service"]["pipelines"]["logs"] = {"receivers": ["otlp"], "processors": ["batch", "rollout"],
                                           "exporters": ["duckdb", "parquet"]}
    with pytest.raises(ConfigError) as err:
        parse_config(cfg, REGISTRY)
    text = str(err.value)
    assert "service::pipelines::logs::processors: processor 'rollout' does not support logs" in text
    assert "'batch'" not in text
    assert "service::pipelines::logs::exporters: exporter 'parquet' does not support logs" in text


def _logs_config(tmp_path: Path, processors: dict, order: list[str]) -> Collector:
    c = Collector(tmp_path, logs=True)
    c.config["processors"].update(processors)
    c.config["service"]["pipelines"]["logs"]["processors"] = order
    return c.rewrite()


def test_logs_pipeline_memory_limiter_filter_batch(tmp_path: Path) -> None:
    """otelcol's usual logs pipeline: records matching the filter's log_record conditions are
    dropped, the rest land (by id), batched; the processors count what went through."""
    from opentelemetry._logs import LogRecord, SeverityNumber

    from tests.test_operations import metric
    from tests.test_delivery import scrape

    processors = {"memory_limiter": {"check_interval": "100ms", "limit_mib": 4000},
                  "filter": {"logs": {"log_record": ['severity_number < SEVERITY_NUMBER_WARN',
                                                     'body["drop"] == true',
                                                     'IsMatch(attributes["tenant"], "^test-")']}},
                  "batch/logs": {"timeout": "100ms", "send_batch_size": 50}}
    with _logs_config(tmp_path, processors, list(processors)) as c:
        provider = _sdk_logs(c.grpc_endpoint, "grpc")
        logger = provider.get_logger("agent")
        levels = [SeverityNumber.INFO, SeverityNumber.WARN, SeverityNumber.ERROR, SeverityNumber.DEBUG]
        kept = set()
        for i in range(400):
            level = levels[i % 4]
            drop_body, test_tenant = i % 7 == 0, i % 11 == 0
            logger.emit(LogRecord(body={"n": i, "drop": drop_body}, severity_number=level,
                                  attributes={"tenant": "test-a" if test_tenant else "prod"}))
            if level.value >= SeverityNumber.WARN.value and not drop_body and not test_tenant:
                kept.add(i)
        assert provider.force_flush(30_000)
        provider.shutdown()
        deadline = time.monotonic() + 20
        while metric(scrape(c), "otelcol_processor_outgoing_items_total", processor="batch/logs") < len(kept):
            assert time.monotonic() < deadline, "the batch processor did not pass the records on"
            time.sleep(0.1)
        text = scrape(c)
        assert metric(text, "otelcol_processor_incoming_items_total", processor="memory_limiter") == 400
        assert metric(text, "otelcol_processor_incoming_items_total", processor="filter") == 400
        assert metric(text, "otelcol_processor_filter_logs_filtered_total", processor="filter") == 400 - len(kept)
        assert metric(text, "otelcol_processor_incoming_items_total", processor="batch/logs") == len(kept)
        assert c.stop() == 0
    with Warehouse.open(c.db) as wh:
        got = [int(b) for b in wh.sql("SELECT body->>'n' AS n FROM logs").column("n").to_pylist()]
    assert sorted(got) == sorted(kept) and 100 < len(kept) < 200


def test_logs_refused_while_over_the_memory_limit(tmp_path: Path) -> None:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().time_unix_nano = 1
    limiter = {"memory_limiter": {"check_interval": "100ms", "limit_mib": 10, "spike_limit_mib": 2}}
    with _logs_config(tmp_path, limiter, ["memory_limiter"]) as c:
        assert grpc_export(c.grpc_endpoint, request, signal="logs")[0] == "RESOURCE_EXHAUSTED"
        req = urllib.request.Request(f"{c.http_url}/v1/logs", data=request.SerializeToString(), method="POST",
                                     headers={"Content-Type": "application/x-protobuf"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 429
        assert c.stop() == 0
    with Warehouse.open(c.db) as wh:
        assert wh.sql("SELECT count(*) AS n FROM logs").column("n")[0].as_py() == 0


def test_filter_log_conditions_are_checked_at_load(tmp_path: Path) -> None:
    cfg = default_config(tmp_path / "spans.duckdb", free_port(), free_port(), free_port())
    cfg["processors"]["filter"] = {"logs": {"log_record": ['severity_number < SEVERITY_NUMBER_WARN',
                                                           'kind == SPAN_KIND_SERVER']}}
    cfg["service"]["pipelines"]["logs"] = {"receivers": ["otlp"], "processors": ["filter"], "exporters": ["duckdb"]}
    with pytest.raises(ConfigError) as err:
        parse_config(cfg, REGISTRY)
    assert "logs::log_record::1: unknown path or name 'kind'" in str(err.value)


def _collector_with_logs(tmp: Path) -> Collector:
    tmp.mkdir()
    return Collector(tmp, logs=True)


def test_logs_forwarded_by_otlp_otlphttp_and_file_exporters(tmp_path: Path) -> None:
    """Collector A forwards its log records over OTLP/gRPC to B, OTLP/HTTP (JSON) to C and into an
    OTLP/JSON file; every record lands in B and C with the same fields as in A's own warehouse."""
    import json

    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.sdk.trace import TracerProvider

    with _collector_with_logs(tmp_path / "b") as b, _collector_with_logs(tmp_path / "c") as c:
        a = _collector_with_logs(tmp_path / "a")
        a.config["exporters"].update({
            "otlp": {"endpoint": b.grpc_endpoint, "tls": {"insecure": True}},
            "otlphttp": {"endpoint": c.http_url, "encoding": "json"},
            "file": {"path": str(tmp_path / "a" / "logs.jsonl")},
            "debug": {}})
        a.config["service"]["pipelines"]["logs"]["exporters"] = ["duckdb", "otlp", "otlphttp", "file", "debug"]
        with a.rewrite():
            provider = _sdk_logs(a.grpc_endpoint, "grpc")
            logger = provider.get_logger("agent")
            tracer = TracerProvider().get_tracer("t")
            for i in range(200):
                with tracer.start_as_current_span("chat"):
                    body = {"n": i, "message": {"role": "assistant", "content": f"a{i}"}} if i % 2 else f"line {i}"
                    logger.emit(LogRecord(event_name="gen_ai.choice" if i % 2 else None, body=body,
                                          severity_number=SeverityNumber.WARN, attributes={"i": i, "ok": True}))
            assert provider.force_flush(30_000)
            provider.shutdown()
            assert a.stop() == 0
        assert b.stop() == 0 and c.stop() == 0
    columns = ("trace_id, span_id, time_unix_nano, event_name, severity_number, body::VARCHAR AS body, "
               "attributes::VARCHAR AS attributes, resource_attributes::VARCHAR AS resource, scope_name")
    rows = {}
    for name, coll in (("a", a), ("b", b), ("c", c)):
        with Warehouse.open(coll.db) as wh:
            rows[name] = sorted(wh.sql(f"SELECT {columns} FROM logs").to_pylist(), key=lambda r: r["time_unix_nano"])
    assert len(rows["a"]) == 200 and len({r["span_id"] for r in rows["a"]}) == 200
    assert rows["b"] == rows["a"] and rows["c"] == rows["a"]
    records = [lr for line in (tmp_path / "a" / "logs.jsonl").read_text().splitlines()
               for rl in json.loads(line)["resourceLogs"] for sl in rl["scopeLogs"] for lr in sl["logRecords"]]
    assert sorted(r["spanId"] for r in records) == sorted(r["span_id"] for r in rows["a"])
    assert "debug: Logs: " in a.log()


def test_logs_exporter_downstream_down_refuses_with_unavailable(tmp_path: Path) -> None:
    """Without a sending queue (log records get one by default now, as spans do) a downstream
    failure reaches the client, as in otelcol."""
    c = Collector(tmp_path, logs=True)
    c.config["exporters"]["otlp"] = {"endpoint": f"127.0.0.1:{free_port()}", "tls": {"insecure": True},
                                     "retry_on_failure": {"enabled": False}, "timeout": "2s",
                                     "sending_queue": {"enabled": False}}
    c.config["service"]["pipelines"]["logs"]["exporters"] = ["otlp"]
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().time_unix_nano = 1
    with c.rewrite():
        code, detail = grpc_export(c.grpc_endpoint, request, signal="logs")
        assert code == "UNAVAILABLE" and "UNAVAILABLE" in detail
        assert c.stop() == 0
