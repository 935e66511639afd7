"""A SpanBatch back into OTLP: protobuf requests (for forwarding) and OTLP/JSON (for files).

Spans are grouped by resource and scope, as OTLP expects.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline.spanbatch import SpanBatch


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
