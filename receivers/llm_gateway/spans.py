"""The gateway's own bounded span buffer between the LLM calls and the pipeline.

A finished call appends its span here and returns at once: the call never waits for, nor fails
because of, the pipeline. A flusher thread hands what has gathered to the pipeline as one
SpanBatch every `flush_interval`; when the pipeline refuses it (memory limiter, full queue) the
spans stay and are offered again on the next tick. Only when the buffer is full is the oldest span
dropped — logged and counted as refused, as otelcol counts what a receiver could not deliver. At
shutdown the buffer is flushed until it is empty or `drain_timeout` has passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from spanpipe.component import Consumer
from spanpipe.errors import PipelineError
from spanpipe.semconv.llm_call import GATEWAY_SCOPE
from spanpipe.spanbatch import KIND_CLIENT, Resource, SpanBatch
from spanpipe.telemetry import counters



@dataclass(slots=True)
class GatewaySpan:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    nbytes: int


def estimated_bytes(attributes: dict[str, Any]) -> int:
    """Memory a span's attributes hold once decoded, roughly (the memory limiter's unit)."""
    size = 512
    for v in attributes.values():
        if isinstance(v, str):
            size += 64 + len(v)
        elif isinstance(v, list):
            size += 64 + 36 * len(v)
        else:
            size += 48
    return size


class SpanBuffer:
    def __init__(self, receiver_id: str, consumer: Consumer, resource: Resource, capacity: int,
                 flush_interval: float, max_batch: int, log: logging.Logger, version: str) -> None:
        self.receiver_id, self.consumer, self.resource = receiver_id, consumer, resource
        self.capacity, self.flush_interval, self.max_batch = capacity, flush_interval, max_batch
        self.log, self.version = log, version
        self._spans: deque[GatewaySpan] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{receiver_id}-spans", daemon=True)
        self._refusing_since: float | None = None

    def __len__(self) -> int:
        return len(self._spans)

    def start(self) -> None:
        self._thread.start()

    def add(self, span: GatewaySpan) -> None:
        dropped = None
        with self._lock:
            if len(self._spans) >= self.capacity:
                dropped = self._spans.popleft()
            self._spans.append(span)
        if dropped is not None:
            counters.add("receiver_refused_spans", 1, receiver=self.receiver_id)
            self.log.error("span buffer full (%d spans; the pipeline has refused spans for %.0fs): dropped "
                           "the span of call %s", self.capacity,
                           time.monotonic() - (self._refusing_since or time.monotonic()),
                           dropped.attributes.get("gen_ai.response.id", dropped.span_id))
        if len(self._spans) >= self.max_batch:
            self._wake.set()

    def _batch(self, spans: list[GatewaySpan]) -> SpanBatch:
        b = SpanBatch(resources=[self.resource])
        for s in spans:
            b.append_span(s.trace_id, s.span_id, s.parent_span_id, s.name, KIND_CLIENT, s.start_time_unix_nano,
                          s.end_time_unix_nano, s.status_code, s.status_message, GATEWAY_SCOPE, self.version,
                          s.attributes)
        b.nbytes = sum(s.nbytes for s in spans)
        return b

    def flush_once(self) -> bool:
        """Offer the oldest spans (up to max_batch) to the pipeline; True if they were taken."""
        with self._lock:
            spans = [self._spans[k] for k in range(min(self.max_batch, len(self._spans)))]
        if not spans:
            return True
        try:
            self.consumer.consume(self._batch(spans))
        except PipelineError as exc:
            if self._refusing_since is None:
                self._refusing_since = time.monotonic()
                self.log.warning("the pipeline refused %d gateway span(s) (%s); they wait in the receiver's "
                                 "buffer (%d/%d)", len(spans), exc, len(self._spans), self.capacity)
            if not exc.retryable:
                self._drop_front(spans, f"permanent error: {exc}")
                return True
            return False
        except Exception as exc:  # noqa: BLE001 - not a refusal the pipeline knows: never retried
            self.log.exception("the pipeline failed on gateway spans")
            self._drop_front(spans, f"unexpected error: {exc!r}")
            return True
        self._refusing_since = None
        self._remove_front(spans)
        counters.add("receiver_accepted_spans", len(spans), receiver=self.receiver_id)
        return True

    def _remove_front(self, spans: list[GatewaySpan]) -> None:
        taken = {id(s) for s in spans}
        with self._lock:
            while self._spans and id(self._spans[0]) in taken:
                self._spans.popleft()
            if self._spans and any(id(s) in taken for s in self._spans):
                # Some were dropped for room meanwhile; remove the rest wherever they are.
                self._spans = deque(s for s in self._spans if id(s) not in taken)

    def _drop_front(self, spans: list[GatewaySpan], why: str) -> None:
        self._remove_front(spans)
        counters.add("receiver_refused_spans", len(spans), receiver=self.receiver_id)
        self.log.error("dropped %d gateway span(s): %s", len(spans), why)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                while len(self._spans) and self.flush_once():
                    pass
            except Exception:  # noqa: BLE001 - a bug downstream must not end the flusher
                self.log.exception("flushing gateway spans failed; trying again")

    def close(self, drain_timeout: float) -> None:
        """Stop the flusher, then flush what is left until empty or `drain_timeout` has passed."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        deadline = time.monotonic() + drain_timeout
        while len(self._spans):
            try:
                if self.flush_once():
                    continue
            except Exception:  # noqa: BLE001
                self.log.exception("flushing gateway spans at shutdown failed")
            if time.monotonic() >= deadline:
                n = len(self._spans)
                counters.add("receiver_refused_spans", n, receiver=self.receiver_id)
                self.log.error("shutdown: the pipeline still refuses; dropped %d gateway span(s) after %.0fs",
                               n, drain_timeout)
                self._spans.clear()
                return
            time.sleep(min(self.flush_interval, 0.1))
