"""The `batch` processor: groups spans (or, in a logs pipeline, log records) so exporters write few
large batches.

otelcol's keys and defaults: `send_batch_size` 8192 (flush when this many are pending),
`timeout` 200ms (flush at the latest this long after the first pending span; 0 = pass through),
`send_batch_max_size` 0 (no upper bound; otherwise larger flushes are split).

Unlike otelcol's batch processor, downstream errors are not swallowed: a retryable refusal from
the next stage is retried here while the pending buffer fills, and once `max_pending` spans are
waiting, callers get a retryable refusal (back-pressure reaches the client).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from pydantic import Field

from spanpipe.logbatch import LogBatch
from spanpipe import admission
from spanpipe.component import Consumer, Processor
from spanpipe.component import ComponentConfig
from spanpipe.configtypes import Duration
from spanpipe.errors import BackPressureError
from spanpipe.registry import Factory
from spanpipe.signals import merge
from spanpipe.spanbatch import SpanBatch


class BatchConfig(ComponentConfig):
    send_batch_size: int = Field(8192, ge=0)
    timeout: Duration = "200ms"  # type: ignore[assignment]
    send_batch_max_size: int = Field(0, ge=0)
    max_pending: int = Field(0, ge=0, description="spans buffered before refusing; 0 = 4 x send_batch_size (at least 32768)")
    block_timeout: Duration = "2s"  # type: ignore[assignment]
    metadata_keys: list[str] = Field(default_factory=list)
    metadata_cardinality_limit: int = Field(1000, ge=1)

    def validate_config(self) -> None:
        if self.send_batch_max_size and self.send_batch_max_size < self.send_batch_size:
            raise ValueError("send_batch_max_size must be 0 or >= send_batch_size")


@dataclass
class _Group:
    """Spans (or log records) pending for one combination of metadata_keys values."""

    first_at: float
    batches: list[SpanBatch | LogBatch] = field(default_factory=list)
    spans: int = 0

    def merged(self) -> SpanBatch | LogBatch:
        return merge(self.batches)


class BatchProcessor(Processor):
    def __init__(self, component_id: str, config: BatchConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.config = config
        self.max_pending = config.max_pending or max(4 * config.send_batch_size, 32768)
        self.metadata_keys = [k.lower() for k in config.metadata_keys]
        self._groups: dict[tuple[tuple[str, ...], ...], _Group] = {}
        self._pending_spans = 0
        self._pending_bytes = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"{component_id}-flush", daemon=True)

    def start(self) -> None:
        self._thread.start()
        admission.register_buffer(f"processor/{self.id}/{id(self)}", lambda: self._pending_bytes)

    def consume(self, batch: SpanBatch) -> None:
        self._add(batch, (("traces",), *(batch.client_metadata.get(k, ()) for k in self.metadata_keys)))

    def consume_logs(self, batch: LogBatch) -> None:
        self._add(batch, (("logs",),))  # log records carry no client metadata: one group, never merged with spans

    def _add(self, batch: SpanBatch | LogBatch, key: tuple[tuple[str, ...], ...]) -> None:
        n = len(batch)
        if not n:
            return
        self.count_in(n)
        if self.config.timeout == 0 and self.config.send_batch_max_size == 0:
            self.forward(batch)
            self.count_out(n)
            return
        deadline = time.monotonic() + self.config.block_timeout
        with self._cond:
            while self._pending_spans + n > self.max_pending and self._pending_spans and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BackPressureError(f"{self.id}: {self._pending_spans} items pending; "
                                            "the next stage is not keeping up")
                self._cond.wait(left)
            if self._stopping:
                raise BackPressureError(f"{self.id}: shutting down")
            group = self._groups.get(key)
            if group is None:
                if len(self._groups) >= self.config.metadata_cardinality_limit:
                    raise BackPressureError(f"{self.id}: {len(self._groups)} metadata_keys combinations pending "
                                            "(metadata_cardinality_limit); retry later")
                group = self._groups[key] = _Group(first_at=time.monotonic())
            group.batches.append(batch)
            group.spans += n
            self._pending_spans += n
            self._pending_bytes += batch.nbytes
            if len(group.batches) == 1 or group.spans >= self.config.send_batch_size:
                self._cond.notify_all()

    def _take(self) -> SpanBatch | LogBatch | None:
        """Wait until a group is due (full, timed out, or stopping), then take it whole."""
        with self._cond:
            while True:
                now = time.monotonic()
                wait: float | None = None
                for key, group in self._groups.items():
                    left = group.first_at + self.config.timeout - now
                    if self._stopping or group.spans >= self.config.send_batch_size or left <= 0:
                        del self._groups[key]
                        return group.merged()
                    wait = left if wait is None else min(wait, left)
                if self._stopping:
                    return None
                self._cond.wait(wait)

    def _release(self, n: int, nbytes: int = 0) -> None:
        with self._cond:
            self._pending_spans -= n
            self._pending_bytes -= nbytes
            self._cond.notify_all()

    def _run(self) -> None:
        while (merged := self._take()) is not None:
            limit = self.config.send_batch_max_size
            parts = ([merged] if not limit or len(merged) <= limit else
                     [merged.take(list(range(i, min(i + limit, len(merged)))))
                      for i in range(0, len(merged), limit)])
            for part in parts:
                self.send_downstream(part)
                self._release(len(part))
            self._release(0, merged.nbytes)


    def shutdown(self) -> None:
        admission.unregister_buffer(f"processor/{self.id}/{id(self)}")
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()


_create = lambda cid, cfg, nxt: BatchProcessor(cid, cfg, nxt)
factory = Factory("batch", "processors", BatchConfig, traces=_create, logs=_create)
