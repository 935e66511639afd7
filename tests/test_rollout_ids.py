"""The rollout processor's id reading (`ReadRolloutIds`) on a decode worker's JSON columns: it reads
only the spans whose attribute texts may hold an id key, and gives exactly what reading every span
gives."""

from __future__ import annotations

import os
from dataclasses import replace

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otlp_requests import kv
from spanpipe.arrowcolumn import JsonColumn
from spanpipe.decodepool import _decode
from spanpipe.processors.rollout_ids import ReadRolloutIds

ROLLOUT, ATTEMPT, SEQUENCE = "agentlightning.rollout_id", "agentlightning.attempt_id", "agentlightning.span_sequence_id"


def s(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def request() -> tuple[bytes, list[str]]:
    """Two resources (one with ids, one without) and spans carrying ids in every way they can."""
    req = ExportTraceServiceRequest()
    spans_by_resource = {
        "tagged": [("plain", []),
                   ("own rollout", [kv(ROLLOUT, s("ro-own")), kv(SEQUENCE, AnyValue(int_value=7))]),
                   ("empty rollout", [kv(ROLLOUT, s("")), kv(ATTEMPT, s("at-own"))]),
                   ("seq as text", [kv(SEQUENCE, s("12"))]),
                   ("seq as double", [kv(SEQUENCE, AnyValue(double_value=3.0))]),
                   ("seq not a number", [kv(SEQUENCE, s("x"))]),
                   ("key in a value", [kv("note", s(f'"{ROLLOUT}": "ro-fake"'))]),
                   ("bytes beside", [kv("blob", AnyValue(bytes_value=b"\x00\xff"))])],
        "untagged": [("orphan", []),
                     ("own ids", [kv(ROLLOUT, s("ro-x")), kv(ATTEMPT, AnyValue(int_value=2))]),
                     ("attempt only", [kv(ATTEMPT, s("at-y"))])],
    }
    names = []
    for resource, spans in spans_by_resource.items():
        rs = req.resource_spans.add()
        rs.resource.attributes.append(kv("service.name", s(resource)))
        if resource == "tagged":
            rs.resource.attributes.extend([kv(ROLLOUT, s("ro-res")), kv(ATTEMPT, s("at-res")),
                                           kv(SEQUENCE, AnyValue(int_value=100))])
        scope = rs.scope_spans.add()
        trace_id = os.urandom(16)
        for name, attributes in spans:
            span = scope.spans.add()
            span.trace_id, span.span_id, span.name = trace_id, os.urandom(8), name
            span.start_time_unix_nano, span.end_time_unix_nano = 1, 2
            span.attributes.extend(attributes)
            names.append(name)
    return req.SerializeToString(), names


def test_only_spans_whose_texts_hold_an_id_key_are_read_and_the_ids_are_those_of_reading_every_span():
    body, names = request()
    batch = _decode(body, False).unpack().batch  # as a decode worker hands it over
    assert isinstance(batch.attributes, JsonColumn)
    every_span = replace(batch, attributes=list(batch.attributes))  # plain dicts: every span read
    reader = ReadRolloutIds([ROLLOUT], [ATTEMPT], [SEQUENCE])

    carriers = batch.attributes.rows_that_may_hold([ROLLOUT, ATTEMPT, SEQUENCE])
    # In a value, a key's quotes are escaped: that text is no carrier. A value kept beside its
    # JSON (bytes) is read, whatever its text says.
    assert [names[i] for i in carriers] == [
        "own rollout", "empty rollout", "seq as text", "seq as double", "seq not a number", "bytes beside",
        "own ids", "attempt only"]
    screened, read_all = reader.derive(batch), reader.derive(every_span)
    assert screened == read_all
    got = {name: (screened.rollouts[i], screened.attempts[i], screened.given_seq[i]) for i, name in enumerate(names)}
    assert got == {
        "plain": ("ro-res", "at-res", 100),
        "own rollout": ("ro-own", "at-res", 7),
        "empty rollout": ("ro-res", "at-own", 100),
        "seq as text": ("ro-res", "at-res", 12),
        "seq as double": ("ro-res", "at-res", 3),
        "seq not a number": ("ro-res", "at-res", None),
        "key in a value": ("ro-res", "at-res", 100),
        "bytes beside": ("ro-res", "at-res", 100),
        "orphan": (None, None, None),
        "own ids": ("ro-x", "2", None),
        "attempt only": (None, None, None),
    }
    assert [names[i] for i in screened.untagged] == ["orphan", "attempt only"]


def test_keys_json_would_escape_are_looked_up_in_every_span():
    body, _ = request()
    batch = _decode(body, False).unpack().batch
    odd = ReadRolloutIds(['rollout "id"', ROLLOUT], [ATTEMPT], ["séquence"])
    assert batch.attributes.rows_that_may_hold(['rollout "id"', ROLLOUT]) is None
    assert odd.derive(batch) == odd.derive(replace(batch, attributes=list(batch.attributes)))
