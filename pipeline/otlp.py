"""OTLP trace requests (protobuf or OTLP/JSON) decoded once into a SpanBatch.

The protobuf is parsed by upb; then one pass over the spans fills the columns. Spans with an
empty or wrong-length trace/span id are rejected one by one, as OTLP's partial success allows.
OTLP/JSON differs from proto3 JSON only in ids (hex, not base64), so it is rewritten to proto3
JSON and parsed into the same message: both encodings go through one decoder.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from spanpipe.errors import InvalidDataError
from spanpipe.spanbatch import DECODED_BYTES_PER_WIRE_BYTE, Resource, SpanBatch

M = TypeVar("M")


@dataclass(slots=True)
class DecodedTraces:
    batch: SpanBatch
    rejected: int
    message: str

    def __len__(self) -> int:
        return len(self.batch)


def any_value(v: Any) -> Any:
    """An OTLP AnyValue as a plain Python value that keeps its type."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return bytes(v.bytes_value)
    return None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def _events(span: Any) -> list[dict[str, Any]] | None:
    if not span.events:
        return None
    return [
        {"time_unix_nano": e.time_unix_nano, "name": e.name, "attributes": attributes(e.attributes)}
        for e in span.events
    ]


def _links(span: Any) -> list[dict[str, Any]] | None:
    if not span.links:
        return None
    return [
        {
            "trace_id": lk.trace_id.hex(),
            "span_id": lk.span_id.hex(),
            "trace_state": lk.trace_state,
            "attributes": attributes(lk.attributes),
        }
        for lk in span.links
    ]


def parse_traces_protobuf(data: bytes) -> ExportTraceServiceRequest:
    try:
        return ExportTraceServiceRequest.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidDataError(f"cannot decode ExportTraceServiceRequest: {exc}") from None


INT64_LIMIT = 2**63  # the warehouse keeps times as BIGINT nanoseconds (until the year 2262)


def _span_problem(tid: bytes, sid: bytes, pid: bytes, start: int, end: int) -> str:
    problems = []
    if len(tid) != 16:
        problems.append(f"trace_id must be 16 bytes (got {len(tid)})")
    if len(sid) != 8:
        problems.append(f"span_id must be 8 bytes (got {len(sid)})")
    if pid and len(pid) != 8:
        problems.append(f"parent_span_id must be empty or 8 bytes (got {len(pid)})")
    for key, t in (("start_time_unix_nano", start), ("end_time_unix_nano", end)):
        if t >= INT64_LIMIT:
            problems.append(f"{key} must be below 2^63 (got {t})")
    return ", ".join(problems)


def decode_traces(request: ExportTraceServiceRequest, wire_bytes: int | None = None) -> DecodedTraces:
    """`wire_bytes`: the request's encoded size, when the caller has it (ByteSize() walks the message)."""
    b = SpanBatch()
    trace_ids, span_ids, parents = b.trace_id, b.span_id, b.parent_span_id
    rejected = 0
    first_reason = ""
    for rs in request.resource_spans:
        res_attrs = attributes(rs.resource.attributes)
        service = res_attrs.get("service.name")
        res_idx = len(b.resources)
        used = False
        for ss in rs.scope_spans:
            scope_name, scope_version = ss.scope.name, ss.scope.version
            for span in ss.spans:
                tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                if (len(tid) != 16 or len(sid) != 8 or (pid and len(pid) != 8)
                        or start >= INT64_LIMIT or end >= INT64_LIMIT):
                    rejected += 1
                    if not first_reason:
                        first_reason = f"span {span.name!r}: " + _span_problem(tid, sid, pid, start, end)
                    continue
                used = True
                trace_ids.append(tid.hex())
                span_ids.append(sid.hex())
                parents.append(pid.hex() if pid else None)
                b.trace_state.append(span.trace_state)
                b.name.append(span.name)
                b.kind.append(span.kind)
                b.start_time_unix_nano.append(start)
                b.end_time_unix_nano.append(end)
                st = span.status
                b.status_code.append(st.code)
                b.status_message.append(st.message)
                b.scope_name.append(scope_name)
                b.scope_version.append(scope_version)
                b.attributes.append(attributes(span.attributes))
                b.events.append(_events(span))
                b.links.append(_links(span))
                b.resource_index.append(res_idx)
        if used:
            b.resources.append(Resource(res_attrs, service if isinstance(service, str) else None,
                                        rs.schema_url))
    message = f"{rejected} span(s) rejected; first: {first_reason}" if rejected else ""
    if b.span_id:
        size = request.ByteSize() if wire_bytes is None else wire_bytes
        b.nbytes = size * DECODED_BYTES_PER_WIRE_BYTE * len(b.span_id) // (len(b.span_id) + rejected)
    return DecodedTraces(b, rejected, message)


def decode_traces_protobuf(data: bytes) -> DecodedTraces:
    return decode_traces(parse_traces_protobuf(data), len(data))


_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def hex_ids_to_base64(obj: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        value = obj.get(key)
        if isinstance(value, str) and value:
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raw = b""  # an invalid id: the span is rejected by the decoder, not the request
            obj[key] = base64.b64encode(raw).decode("ascii")


def parse_otlp_json(data: bytes, message: M, id_holders: Callable[[dict[str, Any]], Iterable[dict[str, Any]]]) -> M:
    """An OTLP/JSON body into `message` (an empty request). OTLP/JSON writes ids in hex where
    protobuf's JSON mapping expects base64: the objects `id_holders(doc)` yields are converted first."""
    try:
        doc = orjson.loads(data)
        if not isinstance(doc, dict):
            raise InvalidDataError("OTLP/JSON body must be a JSON object")
        for obj in id_holders(doc):
            hex_ids_to_base64(obj)
        return json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except InvalidDataError:
        raise
    except (orjson.JSONDecodeError, json_format.ParseError, AttributeError, TypeError,
            ValueError, binascii.Error) as exc:
        raise InvalidDataError(f"cannot decode OTLP/JSON {type(message).__name__}: {exc}") from None


def _span_id_holders(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for rs in doc.get("resourceSpans") or doc.get("resource_spans") or []:
        for ss in rs.get("scopeSpans") or rs.get("scope_spans") or []:
            for span in ss.get("spans") or []:
                yield span
                yield from span.get("links") or []


def parse_traces_json(data: bytes) -> ExportTraceServiceRequest:
    return parse_otlp_json(data, ExportTraceServiceRequest(), _span_id_holders)


def decode_traces_json(data: bytes) -> DecodedTraces:
    return decode_traces(parse_traces_json(data))


def traces_response(decoded: DecodedTraces) -> ExportTraceServiceResponse:
    resp = ExportTraceServiceResponse()
    if decoded.rejected:
        resp.partial_success.rejected_spans = decoded.rejected
        resp.partial_success.error_message = decoded.message
    return resp
