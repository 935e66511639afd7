"""The `memory_limiter` processor: refuses data while the collector uses too much memory.

otelcol's keys: `check_interval` (required), `limit_mib`, `spike_limit_mib` (default 20% of the
limit), or `limit_percentage` / `spike_limit_percentage` of the machine's (or cgroup's) memory.
Every check_interval the collector's RSS is read. Above the soft limit (limit − spike) new data is
refused with the retryable code (gRPC RESOURCE_EXHAUSTED, HTTP 429) — by the receivers before
they decode it (pipeline.admission) and by this processor for anything already decoded; below
it, data is accepted again. Above the soft limit the collector first collects garbage and returns freed heap to the OS
(malloc_trim), then measures again. While no accepted span is held anywhere (batch processor,
exporter queues), RSS above the soft limit is allocator caches that new data reuses: then only
the hard limit refuses (otelcol measures the Go heap in use, not RSS, for the same reason).
Each transition
is logged once; refused spans are counted (`otelcol_processor_refused_spans`).
"""

from __future__ import annotations

import threading

import pyarrow as pa
from pydantic import Field

from pipeline import events
from pipeline import admission
from pipeline.component import Consumer, Processor
from pipeline.config import ComponentConfig
from pipeline.configtypes import Duration
from pipeline.errors import BackPressureError
from pipeline.procmem import MIB, current_rss, release_memory, total_memory
from pipeline.registry import Factory
from pipeline.spanbatch import SpanBatch
from pipeline.telemetry import counters, gauges

class MemoryLimiterConfig(ComponentConfig):
    check_interval: Duration
    limit_mib: int = Field(0, ge=0)
    spike_limit_mib: int = Field(0, ge=0)
    limit_percentage: int = Field(0, ge=0, le=100)
    spike_limit_percentage: int = Field(0, ge=0, le=100)

    def validate_config(self) -> None:
        if self.check_interval <= 0:
            raise ValueError("check_interval: must be greater than 0")
        if not self.limit_mib and not self.limit_percentage:
            raise ValueError("set limit_mib or limit_percentage")
        if self.limit_mib and self.spike_limit_mib >= self.limit_mib:
            raise ValueError("spike_limit_mib must be smaller than limit_mib")
        if self.limit_percentage and self.spike_limit_percentage >= self.limit_percentage:
            raise ValueError("spike_limit_percentage must be smaller than limit_percentage")

    def limits(self) -> tuple[int, int]:
        """(hard limit, soft limit) in bytes."""
        if self.limit_mib:
            hard = self.limit_mib * MIB
            spike = self.spike_limit_mib * MIB if self.spike_limit_mib else hard // 5
        else:
            total = total_memory()
            hard = total * self.limit_percentage // 100
            spike = total * (self.spike_limit_percentage or self.limit_percentage // 5) // 100
        return hard, hard - spike


class MemoryLimiterProcessor(Processor):
    def __init__(self, component_id: str, config: MemoryLimiterConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.config = config
        self.hard, self.soft = config.limits()
        self._refusing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{component_id}-watch", daemon=True)

    def refusing(self) -> bool:
        return self._refusing

    def start(self) -> None:
        self.check()
        self._thread.start()
        admission.register(self)
        self.log.info("memory limits: soft %d MiB, hard %d MiB", self.soft // MIB, self.hard // MIB)

    def shutdown(self) -> None:
        admission.unregister(self)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def check(self) -> None:
        rss = current_rss()
        if rss > self.soft:
            release_memory()
            before, rss = rss, current_rss()
            self.log.debug("rss %d MiB above the soft limit; %d MiB after releasing memory", before // MIB, rss // MIB)
        above = rss > self.soft
        if above and not admission.buffered_spans():
            # Nothing accepted is waiting anywhere: what RSS still holds is allocator caches
            # (pymalloc arenas, DuckDB's, gRPC's) that new data reuses. Refusing could not lower
            # it and would refuse for ever (otelcol limits the Go heap in use, not RSS, for this
            # reason); the hard limit still refuses.
            above = rss > self.hard
        if above != self._refusing:
            self._refusing = above
            gauges.set("memory_limiter_state", int(above), processor=self.id)
            events.publish(events.MEMORY_PRESSURE, processor=self.id, refusing=above, rss_bytes=rss,
                           soft_limit_bytes=self.soft, hard_limit_bytes=self.hard)
            if above:
                self.log.warning("Memory usage is above soft limit. Refusing data. (rss %d MiB, soft limit %d MiB)",
                                 rss // MIB, self.soft // MIB)
            else:
                self.log.info("Memory usage back within limits. Accepting data. (rss %d MiB)", rss // MIB)

    def _watch(self) -> None:
        while not self._stop.wait(self.config.check_interval):
            self.check()

    def consume(self, batch: SpanBatch) -> None:
        self._admit(batch, "spans")

    def consume_logs(self, table: pa.Table) -> None:
        self._admit(table, "log_records")

    def _admit(self, batch: SpanBatch | pa.Table, what: str) -> None:
        self.count_in(len(batch))
        if self._refusing:
            counters.add(f"processor_refused_{what}", len(batch), processor=self.id)
            raise BackPressureError(f"{self.id}: memory usage is above the soft limit; retry later")
        self.forward(batch)
        self.count_out(len(batch))


factory = Factory("memory_limiter", "processors", MemoryLimiterConfig,
                  lambda cid, cfg, nxt: MemoryLimiterProcessor(cid, cfg, nxt), signals=("traces", "logs"))
