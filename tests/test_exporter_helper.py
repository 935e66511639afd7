"""The exporter helper's error semantics, in-process: what can never succeed is permanent (counted,
dropped, never blocking what queues behind it), and only the items at fault are dropped."""

from __future__ import annotations

import threading

from collector import wait_for
from otlp_requests import make_request
from spanpipe.errors import RequestTooLargeError, TransientError
from spanpipe.exporterhelper import ExporterHelperConfig, QueuedExporter
from spanpipe.otlp import decode_traces
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters


class RecordingExporter(QueuedExporter):
    """Refuses any batch holding a span named 'poison' (with an exception it did not expect), and
    batches of more than `max_spans` spans as too large."""

    def __init__(self, config: ExporterHelperConfig, max_spans: int = 0) -> None:
        super().__init__("recording", config)
        self.max_spans = max_spans
        self.stored: list[str] = []
        self.calls = 0
        self.lock = threading.Lock()

    def send(self, batch: SpanBatch, timeout: float) -> None:
        with self.lock:
            self.calls += 1
        if "poison" in batch.name:
            raise ValueError("cannot encode this span")
        if self.max_spans and len(batch) > self.max_spans:
            raise RequestTooLargeError(f"{len(batch)} spans is over {self.max_spans}")
        with self.lock:
            self.stored.extend(batch.span_id)


def spans(n: int, poison: int | None = None) -> SpanBatch:
    req, _ = make_request(n)
    if poison is not None:
        req.resource_spans[0].scope_spans[0].spans[poison].name = "poison"
    return decode_traces(req).batch


def config(**queue: object) -> ExporterHelperConfig:
    return ExporterHelperConfig.model_validate({
        "sending_queue": {"num_consumers": 1, "queue_size": 100, **queue},
        "retry_on_failure": {"initial_interval": "10ms", "max_interval": "50ms", "max_elapsed_time": "0s"}})


def test_a_span_no_exporter_can_write_is_dropped_alone_and_never_blocks_the_queue():
    exp = RecordingExporter(config(batch={"max_size": 10_000, "flush_timeout": "50ms", "min_size": 300}))
    before = counters.value("exporter_send_failed_spans", exporter="recording")
    exp.start()
    batches = [spans(100), spans(100, poison=37), spans(100)]
    for b in batches:
        exp.consume(b)
    wait_for(lambda: len(exp.stored) == 299, 10, poll=0.01)
    exp.consume(after := spans(50))  # what queues behind it goes through
    wait_for(lambda: len(exp.stored) == 349, 10, poll=0.01)
    exp.shutdown()
    expected = [s for b in (*batches, after) for s in b.span_id if s != batches[1].span_id[37]]
    assert sorted(exp.stored) == sorted(expected)
    assert counters.value("exporter_send_failed_spans", exporter="recording") - before == 1
    assert exp.calls < 40  # found by halving, not span by span


def test_a_request_too_large_for_the_destination_is_split_never_retried_unchanged():
    exp = RecordingExporter(config(batch={"max_size": 0, "flush_timeout": "20ms"}), max_spans=64)
    exp.start()
    for _ in range(10):
        exp.consume(spans(50))
    wait_for(lambda: len(exp.stored) == 500, 10, poll=0.01)
    exp.shutdown()
    assert len(set(exp.stored)) == 500


def test_a_request_the_exporter_knows_is_too_large_is_sent_at_once_in_parts_that_fit():
    """The otlp exporter knows how far over its size limit a merged backlog is: the helper sends it
    in that many parts, each encoded once more, instead of halving and re-encoding level by level."""
    sizes: list[int] = []

    class Limited(RecordingExporter):
        def send(self, batch: SpanBatch, timeout: float) -> None:
            sizes.append(len(batch))
            if len(batch) > 64:
                raise RequestTooLargeError(f"{len(batch)} spans is over 64", parts=-(-len(batch) // 64))
            self.stored.extend(batch.span_id)

    exp = Limited(config())
    exp.start()
    exp.consume(spans(500))
    wait_for(lambda: len(exp.stored) == 500, 10, poll=0.01)
    exp.shutdown()
    assert sizes[0] == 500 and len(sizes) == 1 + 8 and all(60 <= n <= 64 for n in sizes[1:]), sizes
    assert len(set(exp.stored)) == 500


def test_without_queue_batching_requests_are_sent_one_by_one():
    """No `sending_queue::batch`: a backlog is never merged into one request (it once grew to
    55,000 spans that the downstream refused for ever)."""
    sizes: list[int] = []

    class Sizes(RecordingExporter):
        def send(self, batch: SpanBatch, timeout: float) -> None:
            if not sizes:
                sizes.append(-1)
                raise TransientError("downstream paused")
            sizes.append(len(batch))

    exp = Sizes(config())
    exp.start()
    for _ in range(20):
        exp.consume(spans(30))
    wait_for(lambda: len(sizes) == 21, 10, poll=0.01)
    exp.shutdown()
    assert sizes[1:] == [30] * 20
