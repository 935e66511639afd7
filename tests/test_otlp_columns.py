"""The compiled OTLP decoder (spanpipe.otlp_columns) against the Python one (spanpipe.otlp).

For any request, the compiled decoder either gives exactly what the Python decoder gives (every
column, values with their types and key order, resources) or leaves the request to it. Requests
are generated (hypothesis) from the OTLP messages and also cut and corrupted as raw bytes.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from spanpipe import otlp_columns
from spanpipe.errors import InvalidDataError
from spanpipe.otlp import decode_traces_protobuf
from spanpipe.otlp_columns import decode_columns, decode_traces
from tests.otlp_requests import all_types_attributes

COLUMNS = ("trace_id", "span_id", "parent_span_id", "trace_state", "name", "kind", "start_time_unix_nano",
           "end_time_unix_nano", "status_code", "status_message", "scope_name", "scope_version", "attributes",
           "events", "links", "resource_index")
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def typed(value: Any) -> Any:
    """A value with its types and dict key order made comparable: 1 != 1.0 != True, -0.0 != 0.0."""
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    return (type(value).__name__, value)


def python_answer(body: bytes) -> Any:
    try:
        decoded = decode_traces_protobuf(body)
    except InvalidDataError as exc:
        return ("error", str(exc))
    b = decoded.batch
    return (typed({c: list(getattr(b, c)) for c in COLUMNS}),
            [(typed(r.attributes), r.service_name, r.schema_url) for r in b.resources],
            b.nbytes, decoded.rejected, decoded.message)


def no_repeated_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    assert len({k for k, _ in pairs}) == len(pairs), f"a repeated key in stored JSON: {pairs}"
    return dict(pairs)


def stored_json(batch: Any, column: str) -> list[Any]:
    """A JSON column as its stored texts read by the standard library (not orjson, which reads
    them in the collector), refusing an object with a repeated key."""
    values = [json.loads(t, object_pairs_hook=no_repeated_key) for t in getattr(batch, column).texts.to_pylist()]
    return [v or None for v in values] if column != "attributes" else values


def compiled_answer(body: bytes) -> Any:
    decoded = decode_columns(body)
    if decoded is None:
        return None
    b = decoded.batch
    for column in ("attributes", "events", "links"):
        assert typed(stored_json(b, column)) == typed(list(getattr(b, column)))
    return (typed({c: list(getattr(b, c)) for c in COLUMNS}),
            [(typed(r.attributes), r.service_name, r.schema_url) for r in b.resources],
            b.nbytes, decoded.rejected, decoded.message)


def same_or_left(body: bytes) -> bool:
    """The compiled answer equals the Python one, or there is none; True when there is one."""
    ours = compiled_answer(body)
    if ours is not None:
        assert ours == python_answer(body)
    return ours is not None


# ---- generated requests ----

texts = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", "a\"b\\c", "\x00\x1f\x7f", "é中😀", "line\nbreak\ttab", "service.name"])
doubles = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.1, 2.0, -0.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, 1 / 3, 123456789.125])
ints = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, -1, 2**53 + 1, -(2**63), 2**63 - 1])
keys = st.sampled_from(["a", "b", "service.name", "gen_ai.usage.input_tokens", "", "ключ"]) | texts


def any_values(depth: int = 2) -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        texts.map(lambda s: AnyValue(string_value=s)), ints.map(lambda i: AnyValue(int_value=i)),
        doubles.map(lambda d: AnyValue(double_value=d)), st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.binary(max_size=4).map(lambda b: AnyValue(bytes_value=b)) | st.just(AnyValue()))
    if depth == 0:
        return scalars

    def array(items: list[AnyValue]) -> AnyValue:
        v = AnyValue()
        v.array_value.SetInParent()
        v.array_value.values.extend(items)
        return v

    def kvlist(items: list[KeyValue]) -> AnyValue:
        v = AnyValue()
        v.kvlist_value.SetInParent()
        v.kvlist_value.values.extend(items)
        return v

    inner = any_values(depth - 1)
    return st.one_of(scalars, scalars, st.lists(inner, max_size=3).map(array),
                     st.lists(key_values(inner), max_size=3).map(kvlist))


def key_values(values: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[KeyValue]:
    return st.builds(lambda k, v, unset: KeyValue(key=k) if unset else KeyValue(key=k, value=v),
                     keys, values, st.booleans().filter(lambda b: not b) | st.just(True))


attribute_lists = st.lists(key_values(any_values()), max_size=6)
ids = st.sampled_from([16, 16, 16, 8, 0, 15]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
span_ids = st.sampled_from([8, 8, 8, 16, 0]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
times = st.integers(0, 2**63 - 1) | st.sampled_from([0, 2**63, 2**64 - 1])


@st.composite
def spans(draw: Any) -> Span:
    s = Span(trace_id=draw(ids), span_id=draw(span_ids), parent_span_id=draw(st.sampled_from([b"", b"\x01" * 8])),
             name=draw(texts), trace_state=draw(texts), kind=draw(st.sampled_from([0, 1, 3, 5, 9, -2])),
             start_time_unix_nano=draw(times), end_time_unix_nano=draw(times))
    s.attributes.extend(draw(attribute_lists))
    if draw(st.booleans()):
        s.status.code = draw(st.sampled_from([0, 1, 2, 7]))
        s.status.message = draw(texts)
    for _ in range(draw(st.integers(0, 2))):
        e = s.events.add(time_unix_nano=draw(st.integers(0, 2**64 - 1)), name=draw(texts))
        e.attributes.extend(draw(attribute_lists))
    for _ in range(draw(st.integers(0, 2))):
        lk = s.links.add(trace_id=draw(st.binary(max_size=16)), span_id=draw(st.binary(max_size=8)),
                         trace_state=draw(texts))
        lk.attributes.extend(draw(attribute_lists))
    return s


@st.composite
def requests(draw: Any) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 3))):
        rs = req.resource_spans.add(schema_url=draw(texts))
        rs.resource.attributes.extend(draw(attribute_lists))
        if draw(st.booleans()):
            rs.resource.entity_refs.add(schema_url=draw(texts), type=draw(texts),
                                        id_keys=draw(st.lists(texts, max_size=2)),
                                        description_keys=draw(st.lists(texts, max_size=2)))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = draw(texts), draw(texts)
            ss.spans.extend(draw(st.lists(spans(), max_size=3)))
    return req


def plain(req: ExportTraceServiceRequest, keep_repeated_keys: bool = False) -> None:
    """Made into what the compiled decoder must take itself: no span to reject, no bytes, no NaN
    or infinity, no repeated key (unless kept)."""

    def clean_kvs(kvs: Any) -> None:
        seen: set[str] = set()
        for kv in list(kvs):
            if kv.key in seen and not keep_repeated_keys:
                kvs.remove(kv)
                continue
            seen.add(kv.key)
            clean_value(kv.value)

    def clean_value(v: AnyValue) -> None:
        which = v.WhichOneof("value")
        if which == "bytes_value":
            v.string_value = v.bytes_value.hex()
        elif which == "double_value" and not math.isfinite(v.double_value):
            v.double_value = 1.5
        elif which == "array_value":
            for x in v.array_value.values:
                clean_value(x)
        elif which == "kvlist_value":
            clean_kvs(v.kvlist_value.values)

    for rs in req.resource_spans:
        clean_kvs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                s.trace_id, s.span_id = s.trace_id.ljust(16, b"t")[:16], s.span_id.ljust(8, b"s")[:8]
                s.start_time_unix_nano %= 2**63
                s.end_time_unix_nano %= 2**63
                clean_kvs(s.attributes)
                for e in s.events:
                    clean_kvs(e.attributes)
                for lk in s.links:
                    clean_kvs(lk.attributes)


@SETTINGS
@given(requests())
def test_any_request_is_decoded_as_the_python_decoder_does_or_left_to_it(req: ExportTraceServiceRequest) -> None:
    same_or_left(req.SerializeToString())


@SETTINGS
@given(requests())
def test_requests_without_anything_unusual_are_decoded_by_the_compiled_decoder(req: ExportTraceServiceRequest) -> None:
    plain(req)
    body = req.SerializeToString()
    has_spans = any(ss.spans for rs in req.resource_spans for ss in rs.scope_spans)
    assert same_or_left(body) == has_spans


@SETTINGS
@given(requests())
def test_requests_with_repeated_keys_are_left_or_stored_without_them(req: ExportTraceServiceRequest) -> None:
    plain(req, keep_repeated_keys=True)
    same_or_left(req.SerializeToString())


@SETTINGS
@given(requests(), st.data())
def test_cut_or_corrupted_bytes_never_decode_differently(req: ExportTraceServiceRequest, data: Any) -> None:
    plain(req)
    body = bytearray(req.SerializeToString())
    if not body:
        return
    if data.draw(st.booleans()):
        body = body[:data.draw(st.integers(0, len(body) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    same_or_left(bytes(body))


# ---- cases by name ----

def one_span(**fields: Any) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "agent"
    ss = rs.scope_spans.add()
    ss.scope.name = "scope"
    span = ss.spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="llm", **fields)
    span.attributes.add(key="k").value.int_value = 7
    return req


def test_every_attribute_type_but_bytes_is_decoded_by_the_compiled_decoder() -> None:
    req = one_span()
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.extend(kv for kv in all_types_attributes() if kv.key != "bytes")
    assert same_or_left(req.SerializeToString())
    span.attributes.extend(kv for kv in all_types_attributes() if kv.key == "bytes")
    assert not same_or_left(req.SerializeToString())


def test_a_resource_with_entity_refs_is_decoded_by_the_compiled_decoder() -> None:
    req = one_span()
    req.resource_spans[0].resource.entity_refs.add(schema_url="s", type="service", id_keys=["service.name"])
    assert same_or_left(req.SerializeToString())


def test_fields_in_any_order_on_the_wire() -> None:
    """Protobuf allows any field order: a KeyValue's value before its key, a scope after its spans, a
    resource after its scope spans."""
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    value = field(1, b"v")  # AnyValue string_value
    kv = field(2, value) + field(1, b"key")
    span = field(1, b"\x01" * 16) + field(9, kv) + field(2, b"\x02" * 8) + field(5, b"name")
    scope = field(2, b"1.0") + field(1, b"scope")
    scope_spans = field(2, span) + field(1, scope)
    resource = field(1, field(1, b"service.name") + field(2, field(1, b"svc")))
    body = field(1, field(2, scope_spans) + field(1, resource))
    assert same_or_left(body)
    batch = decode_columns(body).batch
    assert (batch.attributes[0], batch.scope_version[0], batch.resources[0].service_name) == ({"key": "v"}, "1.0", "svc")


def _len(b: bytes) -> bytes:
    n, out = len(b), b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _with_two_statuses(req: ExportTraceServiceRequest) -> bytes:
    """The request with two Status fields on its span: protobuf merges them."""
    rs = req.resource_spans[0]
    ss = rs.scope_spans[0]
    span = ss.spans[0].SerializeToString() + b"\x7a\x03\x12\x01m" + b"\x7a\x03\x12\x01n"
    scope = ss.scope.SerializeToString()
    ss_raw = b"\x0a" + _len(scope) + scope + b"\x12" + _len(span) + span
    res = rs.resource.SerializeToString()
    rs_raw = b"\x0a" + _len(res) + res + b"\x12" + _len(ss_raw) + ss_raw
    return b"\x0a" + _len(rs_raw) + rs_raw


# case -> what the Python decoder answers: an error, a rejected span, or the span's stored value
LEFT_TO_PYTHON = {
    "bad utf-8 in a name": "error",
    "bad utf-8 in a scope attribute": "error",
    "bad utf-8 in a scope without spans": "error",
    "bad utf-8 in a resource's entity ref": "error",
    "truncated": "error",
    "short trace id": "rejected",
    "time past 2^63": "rejected",
    "status twice": ("status_message", "n"),
    "repeated key": ("attributes", {"k": 8}),
    "bytes": ("attributes", {"k": 7, "b": b"\x00\xff"}),
}


@pytest.mark.parametrize("case", LEFT_TO_PYTHON)
def test_what_the_compiled_decoder_leaves_to_the_python_one(case: str) -> None:
    req = one_span()
    span = req.resource_spans[0].scope_spans[0].spans[0]
    if case == "short trace id":
        span.trace_id = b"\x01" * 15
    elif case == "time past 2^63":
        span.end_time_unix_nano = 2**63
    elif case == "repeated key":
        span.attributes.add(key="k").value.int_value = 8
    elif case == "bytes":
        span.attributes.add(key="b").value.bytes_value = b"\x00\xff"
    elif case == "bad utf-8 in a scope attribute":
        req.resource_spans[0].scope_spans[0].scope.attributes.add(key="zz").value.string_value = "zz"
    elif case == "bad utf-8 in a scope without spans":
        req.resource_spans[0].scope_spans.add().scope.version = "qq"
    elif case == "bad utf-8 in a resource's entity ref":
        req.resource_spans[0].resource.entity_refs.add(type="host", id_keys=["ww"])
    body = _with_two_statuses(req) if case == "status twice" else req.SerializeToString()
    if case == "bad utf-8 in a name":
        body = body.replace(b"llm", b"l\xed\xa0")
    elif case == "bad utf-8 in a scope attribute":
        body = body.replace(b"zz", b"\xc0\xaf")
    elif case == "bad utf-8 in a scope without spans":
        body = body.replace(b"qq", b"\x00\x80")
    elif case == "bad utf-8 in a resource's entity ref":
        body = body.replace(b"ww", b"\xf5\x80")
    elif case == "truncated":
        body = body[:-3]

    assert decode_columns(body) is None
    expected = LEFT_TO_PYTHON[case]
    if expected == "error":
        with pytest.raises(InvalidDataError):
            decode_traces(body)
    elif expected == "rejected":
        assert decode_traces(body).rejected == 1
    else:
        column, value = expected
        assert getattr(decode_traces(body).batch, column)[0] == value


def test_nan_and_infinity_are_left_to_the_python_decoder() -> None:
    req = one_span()
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="x").value.double_value = math.inf
    body = req.SerializeToString()
    assert decode_columns(body) is None
    assert decode_traces(body).batch.attributes[0]["x"] == math.inf


def test_the_package_is_installed_with_its_compiled_decoder() -> None:
    assert otlp_columns.compiled()


def test_without_the_compiled_decoder_every_request_is_decoded_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    body = one_span().SerializeToString()
    monkeypatch.setattr(otlp_columns, "_otlp_columns", None)
    assert decode_columns(body) is None
    assert list(decode_traces(body).batch.attributes) == [{"k": 7}]
