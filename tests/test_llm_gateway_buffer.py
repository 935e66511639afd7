"""The gateway's span buffer, in-process: a pipeline that refuses spans never fails or slows an LLM
call; spans wait and are delivered once it accepts again; what must be dropped is counted."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from collector import free_port, wait_for
from componentkit import Sink, create, registry
from examples.fake_openai import FakeOpenAI
from spanpipe.errors import BackPressureError, PermanentError
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters

FACTORY = registry().get("receivers", "llm_gateway")


class RefusingSink(Sink):
    """Refuses (memory limiter style) while `refusing` is set; counts the refusals."""

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.refusing = True
        self.refusals = 0
        self.error = error or BackPressureError("memory limit reached")

    def consume(self, batch: SpanBatch) -> None:
        if self.refusing:
            self.refusals += 1
            raise self.error
        super().consume(batch)


def gateway(sink: Sink, upstream: FakeOpenAI, **config):
    port = free_port()
    cfg = FACTORY.config_class.model_validate({"endpoint": f"127.0.0.1:{port}", "flush_interval": "20ms",
                                               "upstreams": [{"base_url": upstream.base_url}], **config})
    cfg.validate_config()
    receiver = create(FACTORY, cfg, sink)
    receiver.start()
    return receiver, f"http://127.0.0.1:{port}/v1/chat/completions"


def call(url: str, k: int) -> float:
    started = time.monotonic()
    r = requests.post(url, json={"model": "m", "messages": [{"role": "user", "content": f"What is {k} + 1?"}]},
                      timeout=10)
    assert r.status_code == 200
    return time.monotonic() - started


def test_calls_succeed_at_full_speed_while_the_pipeline_refuses_and_every_span_lands_later():
    sink = RefusingSink()
    with FakeOpenAI(token_ids="when_asked") as up:
        receiver, url = gateway(sink, up)
        try:
            with ThreadPoolExecutor(8) as pool:
                latencies = list(pool.map(lambda k: call(url, k), range(40)))
            assert max(latencies) < 1.0  # no call waited for the pipeline
            deadline = time.monotonic() + 5
            while sink.refusals < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sink.refusals >= 3 and sink.span_ids == []  # offered again and again, never dropped
            wait_for(lambda: len(receiver.spans) == 40, 5, "40 spans held", poll=0.01)
            sink.refusing = False
            deadline = time.monotonic() + 5
            while len(sink.span_ids) < 40 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            receiver.shutdown()
    assert len(set(sink.span_ids)) == 40


def test_a_full_buffer_drops_the_oldest_and_counts_it_and_shutdown_gives_up_after_drain_timeout():
    sink = RefusingSink()
    refused_before = counters.value("receiver_refused_spans", receiver="llm_gateway")
    with FakeOpenAI(token_ids="when_asked") as up:
        receiver, url = gateway(sink, up, buffer_size=5, drain_timeout="300ms")
        for k in range(8):
            call(url, k)
        # A call is recorded just after its answer is sent: wait for the eighth span.
        wait_for(lambda: counters.value("receiver_refused_spans", receiver="llm_gateway") - refused_before == 3,
                 5, "3 spans dropped for room", poll=0.01)
        assert len(receiver.spans) == 5
        started = time.monotonic()
        receiver.shutdown()
        assert time.monotonic() - started < 3
    assert counters.value("receiver_refused_spans", receiver="llm_gateway") - refused_before == 8
    assert sink.span_ids == []


def test_a_permanent_refusal_is_dropped_once_and_counted_never_retried():
    sink = RefusingSink(PermanentError("cannot be written"))
    refused_before = counters.value("receiver_refused_spans", receiver="llm_gateway")
    with FakeOpenAI(token_ids="when_asked") as up:
        receiver, url = gateway(sink, up)
        try:
            call(url, 1)
            wait_for(lambda: sink.refusals == 1 and not len(receiver.spans), 5, "the refused span dropped", poll=0.01)
            time.sleep(0.1)  # flush ticks every 20 ms: a retry would show as a second refusal
        finally:
            receiver.shutdown()
    assert sink.refusals == 1
    assert counters.value("receiver_refused_spans", receiver="llm_gateway") - refused_before == 1
