"""QueuedExporter: the exporter helper's runtime — queues, consumers, retry, drain — written once
for both signals.

`consume` (spans) and `consume_logs` (log records, for exporters that implement `send_logs`) put
the request in that signal's sending queue and return: the request is acknowledged once it is
queued, in memory or on disk. Consumer threads take requests (merged per the queue's batch
settings) and call the exporter's `send` / `send_logs`, retrying what it raises as retryable.
With the queue disabled, the request is sent in the caller's thread and the final error reaches
the receiver.

Shutdown drains: each queued request gets one last attempt within `drain_timeout`; what is left
stays on disk (persistent queue) or is counted and logged as lost (memory queue).
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from typing import ClassVar


from spanpipe.logbatch import LogBatch
from spanpipe import admission, events, signals
from spanpipe.component import Exporter, Storage
from spanpipe.errors import (BackPressureError, PermanentError, PipelineError, RequestTooLargeError,
                             TransientError, UnwritableDataError)
from spanpipe.exporterhelper.config import ExporterHelperConfig
from spanpipe.exporterhelper.queue import FileStore, MemoryStore, QueueFull, SendingQueue
from spanpipe.exporterhelper.retry import Backoff
from spanpipe.promoted import PromotedColumns
from spanpipe.signals import LOGS, TRACES, Item
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters, gauges


SENT, KEPT, DROPPED = "sent", "kept", "dropped"


class QueuedExporter(Exporter):
    config: ExporterHelperConfig
    # A warehouse exporter (rows for rollouts and triplets) sets this: what no `rollout` / `reward`
    # processor filled is derived before the batch is queued (`spanpipe.promoted`).
    fills_promoted_columns: ClassVar[bool] = False

    def __init__(self, component_id: str, config: ExporterHelperConfig) -> None:
        super().__init__(component_id)
        self.config = config
        self._promoted: PromotedColumns | None = None
        self.queues: dict[str, SendingQueue] = {}  # per signal, with the queue enabled
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

    def send_logs(self, batch: LogBatch, timeout: float) -> None:
        """Deliver log records (exporters that take logs) or raise a PipelineError."""
        raise NotImplementedError(f"{self.id} does not export logs")

    @property
    def queue(self) -> SendingQueue | None:
        """The spans' sending queue (None with the queue disabled)."""
        return self.queues.get(TRACES)

    def exports_logs(self) -> bool:
        return type(self).send_logs is not QueuedExporter.send_logs

    # lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self.open()
        qcfg = self.config.sending_queue
        if not qcfg.enabled:
            return
        storage = self.host.extension_as(qcfg.storage, Storage) if qcfg.storage else None
        for signal in (TRACES, LOGS) if self.exports_logs() else (TRACES,):
            name = self.id if signal == TRACES else f"{self.id}.{signal}"
            store = FileStore(storage.directory_for(name), storage.fsync) if storage else MemoryStore()
            queue = self.queues[signal] = SendingQueue(qcfg.queue_size, store)
            if queue.recovered:
                self.log.info("found %d queued requests from a previous run (%s); sending them", queue.recovered, signal)
            admission.register_buffer(f"exporter/{self.id}/{signal}", queue.held_bytes)
            for i in range(qcfg.num_consumers):
                t = threading.Thread(target=self._consume_loop, args=(queue,), name=f"{self.id}-{signal}-sender-{i}",
                                     daemon=True)
                t.start()
                self._consumers.append(t)
        # Depth includes requests taken and being sent or retried: they are not delivered yet.
        gauges.set_function("exporter_queue_size", lambda: sum(q.size() + q.in_flight() for q in self.queues.values()),
                            exporter=self.id)
        gauges.set_function("exporter_queue_capacity", lambda: qcfg.queue_size, exporter=self.id)

    def shutdown(self) -> None:
        for signal in self.queues:
            admission.unregister_buffer(f"exporter/{self.id}/{signal}")
        if self.queues:
            self._drain_deadline = time.monotonic() + self.config.sending_queue.drain_timeout
            self._stopping.set()
            for queue in self.queues.values():
                queue.wake()
            for t in self._consumers:
                t.join(max(self._drain_deadline - time.monotonic(), 0) + 5)
            for signal, queue in self.queues.items():
                self._report_undelivered(signal, queue)
            self._consumers.clear()
        self.close()

    def _report_undelivered(self, signal: str, queue: SendingQueue) -> None:
        left = queue.size() + queue.in_flight() + queue.released
        what = "spans" if signal == TRACES else "log_records"
        if left and queue.persistent:
            self.log.warning("%d %s requests not delivered at shutdown stay in the persistent queue "
                             "and are sent at the next start", left, signal)
        elif left:
            lost = queue.pending_spans()
            counters.add(f"exporter_send_failed_{what}", lost, exporter=self.id)
            self.log.error("%d requests (%d %s) could not be delivered before drain_timeout and are lost "
                           "(a persistent queue keeps them: sending_queue::storage)", left, lost,
                           what.replace("_", " "))

    # data path ---------------------------------------------------------------------------------
    def consume(self, batch: SpanBatch) -> None:
        if self.fills_promoted_columns:
            if self._promoted is None:
                self._promoted = PromotedColumns(self.id, self.log)
            batch = self._promoted.fill(batch)
        self._enqueue(batch)

    def consume_logs(self, batch: LogBatch) -> None:
        if not self.exports_logs():
            raise PermanentError(f"{self.id} does not export log records")
        self._enqueue(batch)

    def _enqueue(self, item: Item) -> None:
        queue = self.queues.get(item.signal)
        if queue is None:
            self._send_with_retry(item, final=True)
            return
        if self._stopping.is_set():
            raise TransientError(f"{self.id}: shutting down")
        qcfg = self.config.sending_queue
        what = item.unit
        try:
            queue.put(item, wait=self.config.timeout if qcfg.block_on_overflow else 0.0)
        except QueueFull:
            counters.add(f"exporter_enqueue_failed_{what}", len(item), exporter=self.id)
            raise BackPressureError(f"{self.id}: sending queue is full ({qcfg.queue_size} requests); "
                                    "retry later") from None
        except OSError as exc:
            counters.add(f"exporter_enqueue_failed_{what}", len(item), exporter=self.id)
            raise TransientError(f"{self.id}: cannot write to the persistent queue: {exc}") from None

    def _consume_loop(self, queue: SendingQueue) -> None:
        batching = self.config.sending_queue.batch
        while True:
            stopping = self._stopping.is_set()
            if stopping and (time.monotonic() > self._drain_deadline or not queue.size()):
                return
            if batching is None:
                item = queue.take(0.2, merge=False)  # one request per send, as queued
            else:
                item = queue.take(0.2, batching.max_size, 0 if stopping else batching.min_size,
                                  batching.flush_timeout, flush_now=self._stopping.is_set)
            if item is None:
                continue
            keys, batch = item
            if self._send_with_retry(batch, final=False) == KEPT:
                queue.release(keys)  # stays on disk for the next start
            else:
                queue.done(keys)

    def _send_with_retry(self, batch: SpanBatch | LogBatch, final: bool) -> str:
        """SENT, KEPT (draining a persistent queue: left on disk) or DROPPED (counted and logged;
        with `final`, also raised to the caller). `batch`: spans or log records.

        An error that can never succeed is permanent: it is not retried. When the data is at fault
        (UnwritableDataError, or an exception the exporter did not expect) or the request is too
        large for the destination, the request is sent in parts, so only what cannot be written
        is dropped and nothing queued behind it waits."""
        backoff = Backoff(self.config.retry_on_failure)
        logs = batch.signal == LOGS
        what = batch.unit
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
                return self._send_in_parts(batch, final, error)
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
            queue = self.queues.get(batch.signal)
            if draining and error.retryable and not final and queue is not None and queue.persistent:
                return KEPT
            counters.add(f"exporter_send_failed_{what}", len(batch), exporter=self.id)
            self.log.error("dropping %d %s: %s (%s)", len(batch), what, error,
                           "retries exhausted" if error.retryable else "not retryable")
            if final:
                raise error
            return DROPPED

    def _send_in_parts(self, batch: SpanBatch | LogBatch, final: bool, error: PipelineError) -> str:
        """Unwritable data: halves, until the items at fault are alone. Too large: the parts the
        exporter says should fit."""
        parts = error.parts if isinstance(error, RequestTooLargeError) else 2
        self.log.warning("sending %d items failed (%s); sending them in %d parts", len(batch), error, parts)
        results = [self._send_with_retry(part, final) for part in signals.split(batch, parts)]
        return KEPT if KEPT in results else SENT if all(r == SENT for r in results) else DROPPED
