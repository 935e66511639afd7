"""Spans (a SpanBatch) and log records (an Arrow table of `otlp_logs.LOGS_COLUMNS`) back into OTLP:
protobuf requests (for forwarding) and OTLP/JSON (for files).

Items are grouped by resource and scope, as OTLP expects.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pyarrow as pa
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from spanpipe.spanbatch import SpanBatch


def to_any_value(value: Any, out: AnyValue) -> None:
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, (bytes, bytearray)):
        out.bytes_value = bytes(value)
    elif isinstance(value, (list, tuple)):
        arr = out.array_value
        for v in value:
            to_any_value(v, arr.values.add())
    elif isinstance(value, dict):
        kvl = out.kvlist_value
        for k, v in value.items():
            kv = kvl.values.add()
            kv.key = str(k)
            to_any_value(v, kv.value)
    elif value is not None:
        out.string_value = str(value)


def _fill_attributes(target: Any, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        kv: KeyValue = target.add()
        kv.key = k
        to_any_value(v, kv.value)


def to_request(batch: SpanBatch) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    groups: dict[tuple[int, str, str], Any] = {}
    resource_spans: dict[int, Any] = {}
    for i in range(len(batch)):
        r = batch.resource_index[i]
        key = (r, batch.scope_name[i], batch.scope_version[i])
        ss = groups.get(key)
        if ss is None:
            rs = resource_spans.get(r)
            if rs is None:
                rs = req.resource_spans.add()
                res = batch.resources[r]
                _fill_attributes(rs.resource.attributes, res.attributes)
                rs.schema_url = res.schema_url
                resource_spans[r] = rs
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = key[1], key[2]
            groups[key] = ss
        sp = ss.spans.add()
        sp.trace_id = bytes.fromhex(batch.trace_id[i])
        sp.span_id = bytes.fromhex(batch.span_id[i])
        if batch.parent_span_id[i]:
            sp.parent_span_id = bytes.fromhex(batch.parent_span_id[i])
        sp.trace_state = batch.trace_state[i]
        sp.name = batch.name[i]
        sp.kind = batch.kind[i]
        sp.start_time_unix_nano = batch.start_time_unix_nano[i]
        sp.end_time_unix_nano = batch.end_time_unix_nano[i]
        sp.status.code = batch.status_code[i]
        sp.status.message = batch.status_message[i]
        _fill_attributes(sp.attributes, batch.attributes[i])
        for ev in batch.events[i] or ():
            e = sp.events.add()
            e.time_unix_nano, e.name = ev["time_unix_nano"], ev["name"]
            _fill_attributes(e.attributes, ev["attributes"])
        for lk in batch.links[i] or ():
            link = sp.links.add()
            link.trace_id = bytes.fromhex(lk["trace_id"])
            link.span_id = bytes.fromhex(lk["span_id"])
            link.trace_state = lk["trace_state"]
            _fill_attributes(link.attributes, lk["attributes"])
    return req


def _b64_to_hex(obj: dict[str, Any], keys: tuple[str, ...]) -> None:
    for k in keys:
        if k in obj:
            obj[k] = base64.b64decode(obj[k]).hex()


def to_otlp_json(batch: SpanBatch) -> dict[str, Any]:
    """OTLP/JSON (hex ids, integer enums, int64 as strings) of the batch."""
    doc = json_format.MessageToDict(to_request(batch), use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                _b64_to_hex(sp, ("traceId", "spanId", "parentSpanId"))
                for lk in sp.get("links", []):
                    _b64_to_hex(lk, ("traceId", "spanId"))
    return doc


def logs_to_request(table: pa.Table) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    groups: dict[tuple[str, str], Any] = {}
    resource_logs: dict[str, Any] = {}
    for rec in table.to_pylist():
        res_json = rec["resource_attributes"] or "{}"
        key = (res_json, rec["scope_name"] or "")
        sl = groups.get(key)
        if sl is None:
            rl = resource_logs.get(res_json)
            if rl is None:
                rl = resource_logs[res_json] = req.resource_logs.add()
                _fill_attributes(rl.resource.attributes, orjson.loads(res_json))
            sl = groups[key] = rl.scope_logs.add()
            sl.scope.name = key[1]
        lr = sl.log_records.add()
        lr.time_unix_nano = rec["time_unix_nano"] or 0
        lr.observed_time_unix_nano = rec["observed_time_unix_nano"] or 0
        lr.severity_number = rec["severity_number"] or 0
        lr.severity_text = rec["severity_text"] or ""
        lr.event_name = rec["event_name"] or ""
        if rec["trace_id"]:
            lr.trace_id = bytes.fromhex(rec["trace_id"])
        if rec["span_id"]:
            lr.span_id = bytes.fromhex(rec["span_id"])
        if rec["body"] is not None:
            to_any_value(orjson.loads(rec["body"]), lr.body)
        _fill_attributes(lr.attributes, orjson.loads(rec["attributes"] or "{}"))
    return req


def logs_to_otlp_json(table: pa.Table) -> dict[str, Any]:
    """OTLP/JSON (hex ids, integer enums, int64 as strings) of the log records."""
    doc = json_format.MessageToDict(logs_to_request(table), use_integers_for_enums=True)
    for rl in doc.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for lr in sl.get("logRecords", []):
                _b64_to_hex(lr, ("traceId", "spanId"))
    return doc
