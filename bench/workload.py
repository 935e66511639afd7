"""Pre-built, realistic OTLP trace requests for the benchmarks: LLM-agent-style nested traces.

Each trace: an agent root span, LLM call spans with ~10 attributes and a ~500-byte prompt, and
tool spans beneath; resource attributes carry the service name and rollout ids.
"""

from __future__ import annotations

import os
import random
import struct

import numpy as np

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PROMPT = ("You are a careful math tutor. Solve the problem step by step and give the final "
          "answer in a box. ") * 5


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        v = AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = AnyValue(int_value=value)
    elif isinstance(value, float):
        v = AnyValue(double_value=value)
    else:
        v = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=v)


MARKER = b"\xab\xcd\xef\x01\x23\x45\x67\x89"


def build_request(spans_per_request: int, rng: random.Random, rollout: str,
                  trace_prefix: bytes | None = None) -> tuple[bytes, list[tuple[str, str]]]:
    """One serialized request and the (trace_id, span_id) of every span in it.

    With `trace_prefix` (8 bytes) every trace id starts with it, so a load generator can stamp a
    unique prefix into a pre-built request (see Template) instead of rebuilding it.
    """
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([
        _kv("service.name", "bench-agent"),
        _kv("agentlightning.rollout_id", rollout),
        _kv("agentlightning.attempt_id", rollout.replace("ro-", "at-")),
    ])
    ss = rs.scope_spans.add()
    ss.scope.name = "bench.workload"
    ids = []
    now = 1_760_000_000_000_000_000 + rng.randrange(10**12)
    per_trace = 8
    trace_id = b""
    root = b""
    for i in range(spans_per_request):
        if i % per_trace == 0:
            trace_id = (trace_prefix + os.urandom(8)) if trace_prefix else os.urandom(16)
            root = b""
        sp = ss.spans.add()
        sp.trace_id = trace_id
        sp.span_id = os.urandom(8)
        sp.start_time_unix_nano = now + i * 1000
        sp.end_time_unix_nano = now + i * 1000 + 500_000
        if i == spans_per_request - 1:
            sp.parent_span_id = root
            sp.name = "agentlightning.annotation"
            sp.attributes.extend([_kv("agentlightning.reward.0.name", "primary"),
                                  _kv("agentlightning.reward.0.value", 1.0)])
        elif not root:
            root = sp.span_id
            sp.name = "agentlightning.rollout" if i == 0 else "agent.run"
            sp.kind = Span.SPAN_KIND_INTERNAL
            sp.attributes.extend([_kv("agent.name", "solver"), _kv("step", i)])
        else:
            sp.parent_span_id = root
            sp.name = "openai.chat.completion"
            sp.kind = Span.SPAN_KIND_CLIENT
            sp.attributes.extend([
                _kv("gen_ai.operation.name", "chat"),
                _kv("gen_ai.system", "openai"),
                _kv("gen_ai.request.model", "qwen2.5-7b-instruct"),
                _kv("gen_ai.response.model", "qwen2.5-7b-instruct"),
                _kv("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(48):x}"),
                _kv("gen_ai.usage.input_tokens", rng.randrange(100, 900)),
                _kv("gen_ai.usage.output_tokens", rng.randrange(10, 300)),
                _kv("gen_ai.request.temperature", 0.7),
                _kv("gen_ai.prompt.0.role", "user"),
                _kv("gen_ai.prompt.0.content", PROMPT),
            ])
        ids.append((trace_id.hex(), sp.span_id.hex()))
    return req.SerializeToString(), ids


def _find_all(data: bytes, needle: bytes) -> list[int]:
    out, pos = [], data.find(needle)
    while pos != -1:
        out.append(pos)
        pos = data.find(needle, pos + len(needle))
    return out


class Template:
    """A pre-built request whose trace ids can be re-stamped cheaply: unique spans per send."""

    def __init__(self, spans_per_request: int, seed: int) -> None:
        rng = random.Random(seed)
        # The rollout id carries the marker too, so each stamped request is a rollout of its own.
        payload, ids = build_request(spans_per_request, rng, f"ro-{MARKER.hex()}", MARKER)
        self.payload = payload
        self.ids = ids  # with MARKER as the prefix
        self.offsets = _find_all(payload, MARKER)
        self.text_offsets = _find_all(payload, MARKER.hex().encode())
        assert len(self.offsets) == spans_per_request, "every trace id must be patchable"
        # Where each span's start and end time (fixed64 fields 7 and 8) sit, to move them to "now".
        spans = ExportTraceServiceRequest.FromString(payload).resource_spans[0].scope_spans[0].spans
        self.base_time = min(sp.start_time_unix_nano for sp in spans)
        self.time_offsets: list[tuple[int, int]] = []  # (offset of the value, its time after base_time)
        for tag, times in ((b"\x39", {sp.start_time_unix_nano for sp in spans}),
                           (b"\x41", {sp.end_time_unix_nano for sp in spans})):
            for t in times:
                for off in _find_all(payload, tag + struct.pack("<Q", t)):
                    self.time_offsets.append((off + 1, t - self.base_time))
        assert len(self.time_offsets) == 2 * spans_per_request, "every span time must be patchable"
        # The same as byte positions and values, so that stamping is one numpy assignment.
        self._time_bytes = np.array([off for off, _ in self.time_offsets])[:, None] + np.arange(8)
        self._time_after = np.array([after for _, after in self.time_offsets], dtype="<u8")
        self._id_bytes = np.array(self.offsets)[:, None] + np.arange(8)
        self._text_bytes = np.array(self.text_offsets, dtype=np.int64)[:, None] + np.arange(16)

    def stamp(self, prefix: bytes, at_ns: int | None = None) -> bytes:
        """The request with trace ids made unique by `prefix`; with `at_ns`, its spans moved to
        start there (as an agent's spans arrive shortly after they start), else at the template's
        own times, the same for every request of this template."""
        buf = bytearray(self.payload)
        view = np.frombuffer(buf, dtype=np.uint8)
        view[self._id_bytes] = np.frombuffer(prefix, dtype=np.uint8)
        if len(self._text_bytes):
            view[self._text_bytes] = np.frombuffer(prefix.hex().encode(), dtype=np.uint8)
        if at_ns is not None:
            view[self._time_bytes] = (self._time_after + np.uint64(at_ns)).view(np.uint8).reshape(-1, 8)
        return bytes(buf)

    def ids_for(self, prefix: bytes) -> list[tuple[str, str]]:
        hx, marker = prefix.hex(), MARKER.hex()
        return [(t.replace(marker, hx, 1), s) for t, s in self.ids]
