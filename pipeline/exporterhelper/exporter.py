"""QueuedExporter: the exporter helper's runtime — queue, consumers, retry, drain.

`consume` (called by the pipeline) puts the request in the sending queue and returns: the
request is acknowledged once it is queued, in memory or on disk. Consumer threads take requests
(merged per the queue's batch settings) and call the exporter's `send`, retrying what it raises
as retryable. With the queue disabled, `consume` sends in the caller's thread and returns the
final error to the receiver.

Log records (`consume_logs`, for exporters whose factory lists "logs") are sent in the caller's
thread with the same retry settings, bypassing the queue: a failure reaches the client, which
retries as OTLP clients do.

Shutdown drains: each queued request gets one last attempt within `drain_timeout`; what is left
stays on disk (persistent queue) or is counted and logged as lost (memory queue).
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from pathlib import Path

import pyarrow as pa

from spanpipe import admission, events
from spanpipe.component import Exporter, Storage
from spanpipe.errors import (BackPressureError, PipelineError, RequestTooLargeError, TransientError,
                             UnwritableDataError)
from spanpipe.exporterhelper.config import ExporterHelperConfig
from spanpipe.exporterhelper.queue import FileStore, MemoryStore, QueueFull, SendingQueue
from spanpipe.exporterhelper.retry import Backoff
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters, gauges


SENT, KEPT, DROPPED = "sent", "kept", "dropped"


class QueuedExporter(Exporter):
    config: ExporterHelperConfig

    def __init__(self, component_id: str, config: ExporterHelperConfig) -> None:
        super().__init__(component_id)
        self.config = config
        self.queue: SendingQueue | None = None
        self._consumers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._drain_deadline = 0.0

    # what an exporter implements ------------------------------------------------------------
    def open(self) -> None:
        """Connect / open files; raise to abort start-up."""

    def close(self) -> None:
        """Release what `open` acquired, after the queue has drained."""

    @abstractmethod
    def send(self, batch: SpanBatch, timeout: float) -> None:
        """Deliver the batch or raise a PipelineError (retryable or not)."""

    def send_logs(self, table: pa.Table, timeout: float) -> None:
        """Deliver log records (exporters that take logs) or raise a PipelineError."""
        raise NotImplementedError(f"{self.id} does not export logs")

    # lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self.open()
        qcfg = self.config.sending_queue
        if not qcfg.enabled:
            return
        store: MemoryStore | FileStore = MemoryStore()
        if qcfg.storage:
            storage = self.host.extension_as(qcfg.storage, Storage)
            store = FileStore(storage.directory_for(self.id), storage.fsync)
        self.queue = SendingQueue(qcfg.queue_size, store)
        if self.queue.recovered:
            self.log.info("found %d queued requests from a previous run; sending them", self.queue.recovered)
        admission.register_buffer(f"exporter/{self.id}", self.queue.held_bytes)
        gauges.set_function("exporter_queue_size", self.queue.size, exporter=self.id)
        gauges.set_function("exporter_queue_capacity", lambda: qcfg.queue_size, exporter=self.id)
        for i in range(qcfg.num_consumers):
            t = threading.Thread(target=self._consume_loop, name=f"{self.id}-sender-{i}", daemon=True)
            t.start()
            self._consumers.append(t)

    def shutdown(self) -> None:
        admission.unregister_buffer(f"exporter/{self.id}")
        if self.queue is not None:
            self._drain_deadline = time.monotonic() + self.config.sending_queue.drain_timeout
            self._stopping.set()
            self.queue.wake()
            for t in self._consumers:
                t.join(max(self._drain_deadline - time.monotonic(), 0) + 5)
            left = self.queue.size() + self.queue.in_flight() + self.queue.released
            if left and self.queue.persistent:
                self.log.warning("%d requests not delivered at shutdown stay in the persistent queue "
                                 "and are sent at the next start", left)
            elif left:
                lost = self.queue.pending_spans()
                counters.add("exporter_send_failed_spans", lost, exporter=self.id)
                self.log.error("%d requests (%d spans) could not be delivered before drain_timeout and "
                               "are lost (a persistent queue keeps them: sending_queue::storage)", left, lost)
            self._consumers.clear()
        self.close()

    # data path ---------------------------------------------------------------------------------
    def consume(self, batch: SpanBatch) -> None:
        if self.queue is None:
            self._send_with_retry(batch, final=True)
            return
        if self._stopping.is_set():
            raise TransientError(f"{self.id}: shutting down")
        qcfg = self.config.sending_queue
        try:
            self.queue.put(batch, wait=self.config.timeout if qcfg.block_on_overflow else 0.0)
        except QueueFull:
            counters.add("exporter_enqueue_failed_spans", len(batch), exporter=self.id)
            raise BackPressureError(f"{self.id}: sending queue is full ({qcfg.queue_size} requests); "
                                    "retry later") from None
        except OSError as exc:
            counters.add("exporter_enqueue_failed_spans", len(batch), exporter=self.id)
            raise TransientError(f"{self.id}: cannot write to the persistent queue: {exc}") from None

    def consume_logs(self, table: pa.Table) -> None:
        if self._stopping.is_set():
            raise TransientError(f"{self.id}: shutting down")
        self._send_with_retry(table, final=True)

    def _consume_loop(self) -> None:
        assert self.queue is not None
        batching = self.config.sending_queue.batch
        while True:
            stopping = self._stopping.is_set()
            if stopping and (time.monotonic() > self._drain_deadline or not self.queue.size()):
                return
            if batching is None:
                item = self.queue.take(0.2, merge=False)  # one request per send, as queued
            else:
                item = self.queue.take(0.2, batching.max_size, 0 if stopping else batching.min_size,
                                       batching.flush_timeout, flush_now=self._stopping.is_set)
            if item is None:
                continue
            keys, batch = item
            if self._send_with_retry(batch, final=False) == KEPT:
                self.queue.release(keys)  # stays on disk for the next start
            else:
                self.queue.done(keys)

    def _send_with_retry(self, batch: SpanBatch | pa.Table, final: bool) -> str:
        """SENT, KEPT (draining a persistent queue: left on disk) or DROPPED (counted and logged;
        with `final`, also raised to the caller). `batch`: spans, or log records as a table.

        An error that can never succeed is permanent: it is not retried. When the data is at fault
        (UnwritableDataError, or an exception the exporter did not expect) or the request is too
        large for the destination, the request is sent in halves, so only what cannot be written
        is dropped and nothing queued behind it waits."""
        backoff = Backoff(self.config.retry_on_failure)
        logs = isinstance(batch, pa.Table)
        what = "log_records" if logs else "spans"
        while True:
            try:
                if logs:
                    self.send_logs(batch, self.config.timeout)
                else:
                    self.send(batch, self.config.timeout)
                counters.add(f"exporter_sent_{what}", len(batch), exporter=self.id)
                return SENT
            except PipelineError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - a bug in one exporter must not kill its sender
                self.log.exception("unexpected error sending %d %s", len(batch), what)
                error = UnwritableDataError(f"{type(exc).__name__}: {exc}")
            if isinstance(error, (UnwritableDataError, RequestTooLargeError)) and len(batch) > 1:
                return self._send_halves(batch, final, error)
            draining = self._stopping.is_set()
            delay = backoff.next_delay(error.retry_after) if error.retryable else None
            if draining:
                delay = None  # that was the last attempt
            events.publish(events.EXPORT_FAILED, exporter=self.id, spans=len(batch), error=str(error),
                           retry_in_s=delay)
            if delay is not None:
                self.log.warning("sending %d %s failed, retrying in %.1fs: %s", len(batch), what, delay, error)
                self._stopping.wait(delay)  # woken early by shutdown: one last attempt now
                continue
            if draining and error.retryable and not final and self.queue is not None and self.queue.persistent:
                return KEPT
            counters.add(f"exporter_send_failed_{what}", len(batch), exporter=self.id)
            self.log.error("dropping %d %s: %s (%s)", len(batch), what, error,
                           "retries exhausted" if error.retryable else "not retryable")
            if final:
                raise error
            return DROPPED

    def _send_halves(self, batch: SpanBatch | pa.Table, final: bool, error: PipelineError) -> str:
        n = len(batch)
        self.log.warning("sending %d items failed (%s); sending them in two halves", n, error)
        if isinstance(batch, pa.Table):
            halves: list[SpanBatch | pa.Table] = [batch.slice(0, n // 2), batch.slice(n // 2)]
        else:
            halves = [batch.take(list(range(n // 2))), batch.take(list(range(n // 2, n)))]
        results = [self._send_with_retry(half, final) for half in halves]
        return KEPT if KEPT in results else SENT if results == [SENT, SENT] else DROPPED
