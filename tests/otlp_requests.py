"""Hand-built OTLP requests for tests: every AnyValue type, events, links, bad ids."""

from __future__ import annotations

import functools
import os

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def all_types_attributes() -> list[KeyValue]:
    arr = AnyValue()
    arr.array_value.values.extend([AnyValue(int_value=1), AnyValue(string_value="two"), AnyValue(double_value=3.5)])
    kvl = AnyValue()
    kvl.kvlist_value.values.extend([kv("inner", AnyValue(bool_value=True)),
                                    kv("deep", AnyValue(int_value=-(2**63)))])
    return [
        kv("str", AnyValue(string_value="héllo \"quoted\"")),
        kv("int", AnyValue(int_value=2**63 - 1)),
        kv("neg", AnyValue(int_value=-42)),
        kv("double", AnyValue(double_value=0.1)),
        kv("whole_double", AnyValue(double_value=2.0)),
        kv("bool", AnyValue(bool_value=False)),
        kv("bytes", AnyValue(bytes_value=b"\x00\x01\xfe\xff")),
        kv("array", arr),
        kv("kvlist", kvl),
        kv("empty", AnyValue()),
    ]


EXPECTED_ALL_TYPES = {
    "str": "héllo \"quoted\"",
    "int": 2**63 - 1,
    "neg": -42,
    "double": 0.1,
    "whole_double": 2.0,
    "bool": False,
    "bytes": "AAH+/w==",
    "array": [1, "two", 3.5],
    "kvlist": {"inner": True, "deep": -(2**63)},
    "empty": None,
}


def make_request(n_spans: int = 3, bad_ids: int = 0, service: str = "test-svc") -> tuple[ExportTraceServiceRequest, list[tuple[str, str]]]:
    """A request with one resource, n valid spans in one trace (a root and children) + bad ones,
    all ids new. Copied from a template built once per shape and given new ids: building the
    spans field by field cost the load-generating tests 11 ms per 200 spans, most of their CPU."""
    req = ExportTraceServiceRequest()
    req.CopyFrom(_template(n_spans, bad_ids, service))
    spans = req.resource_spans[0].scope_spans[0].spans
    trace_id = os.urandom(16)
    fresh = os.urandom(16 * n_spans)  # per span: its id (8 bytes), its link's span id (8)
    link_traces = os.urandom(16 * n_spans)
    ids = []
    root = fresh[:8]
    for i in range(n_spans):
        sp = spans[i]
        sp.trace_id, sp.span_id = trace_id, fresh[16 * i:16 * i + 8]
        if i:
            sp.parent_span_id = root
        ln = sp.links[0]
        ln.trace_id, ln.span_id = link_traces[16 * i:16 * i + 16], fresh[16 * i + 8:16 * i + 16]
        ids.append((trace_id.hex(), sp.span_id.hex()))
    for i in range(n_spans, n_spans + bad_ids):
        spans[i].trace_id, spans[i].span_id = trace_id, os.urandom(16)  # 16-byte span id: invalid
    return req, ids


@functools.lru_cache(maxsize=32)
def _template(n_spans: int, bad_ids: int, service: str) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", AnyValue(string_value=service)),
                                   kv("host.cores", AnyValue(int_value=2))])
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "tests.scope", "1.2.3"
    t0 = 1_700_000_000_123_456_789
    for i in range(n_spans):
        sp = ss.spans.add()
        sp.name = f"span-{i}"
        sp.kind = 1 + i % 5
        sp.start_time_unix_nano = t0 + i
        sp.end_time_unix_nano = t0 + i + 1_000_000_007
        sp.trace_state = "k=v"
        sp.status.code = i % 3
        sp.status.message = "boom" if i % 3 == 2 else ""
        sp.attributes.extend(all_types_attributes())
        ev = sp.events.add()
        ev.time_unix_nano, ev.name = t0 + i + 5, "gen_ai.user.message"
        ev.attributes.extend([kv("content", AnyValue(string_value="hi")), kv("n", AnyValue(int_value=7))])
        ln = sp.links.add()
        ln.trace_state = "a=b"
        ln.attributes.extend([kv("link.kind", AnyValue(string_value="follows"))])
    for i in range(bad_ids):
        ss.spans.add().name = f"bad-{i}"
    return req
