"""The `memory_limiter` processor: refuses data while the collector holds too much of it.

otelcol's keys: `check_interval` (required), `limit_mib`, `spike_limit_mib` (default 20% of the
limit), or `limit_percentage` / `spike_limit_percentage` of the machine's (or cgroup's) memory.

What is measured is what the collector holds, as otelcol measures the Go heap in use rather than
RSS: the process's idle footprint (RSS when the limiter starts) plus the bytes accounted in
spanpipe.admission — batches waiting in the batch processor, exporter queues, requests being
decoded (reserved at their worst-case cost before parsing), and DuckDB's memory (which refusing
does not free, so it only makes the limiter refuse sooner while data is held). RSS is
not used: allocators keep it high long after the data is gone, and a limiter reading it refused
for ever while idle. Above the soft limit (limit − spike) new data is refused with the retryable
code (gRPC RESOURCE_EXHAUSTED, HTTP 429), by the receivers before they decode and by this
processor; with nothing held, nothing is refused. A request whose decoding alone could never fit
is refused for good (RESOURCE_EXHAUSTED / 413). Each transition is logged once; refused spans are
counted (`otelcol_processor_refused_spans`).
"""

from __future__ import annotations


from pydantic import Field

from spanpipe.logbatch import LogBatch
from spanpipe import events
from spanpipe import admission
from spanpipe.component import Consumer, Processor
from spanpipe.component import ComponentConfig
from spanpipe.configtypes import Duration
from spanpipe.errors import BackPressureError
from spanpipe.periodic import Periodic
from spanpipe.procmem import MIB, current_rss, release_memory, total_memory
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters, gauges

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
        self.baseline = 0
        self._watch = Periodic(f"{component_id}-watch", config.check_interval, self.check, self.log)

    def refusing(self) -> bool:
        return self._refusing

    def start(self) -> None:
        self.baseline = current_rss()
        if self.baseline >= self.soft:
            self.log.error("the collector's idle footprint (%d MiB) is already above the soft limit (%d MiB): "
                           "every request will be refused; raise limit_mib", self.baseline // MIB, self.soft // MIB)
        self.check()
        self._watch.start()
        admission.register(self)
        self.log.info("memory limits: soft %d MiB, hard %d MiB (idle footprint %d MiB)",
                      self.soft // MIB, self.hard // MIB, self.baseline // MIB)

    def shutdown(self) -> None:
        admission.unregister(self)
        self._watch.stop()

    def room(self) -> tuple[int, int]:
        ever = self.hard - self.baseline
        return max(ever - admission.held_bytes(), 0), max(ever, 0)

    def check(self) -> None:
        held = admission.held_bytes()
        usage = self.baseline + held + admission.cache_bytes()
        above = usage > self.soft and (held > 0 or self.baseline >= self.soft)
        if above:
            release_memory()  # while refusing, hand what was freed back to the OS (RSS, not the decision)
        if above != self._refusing:
            self._refusing = above
            gauges.set("memory_limiter_state", int(above), processor=self.id)
            events.publish(events.MEMORY_PRESSURE, processor=self.id, refusing=above, held_bytes=held,
                           usage_bytes=usage, soft_limit_bytes=self.soft, hard_limit_bytes=self.hard)
            if above:
                self.log.warning("Memory usage is above soft limit. Refusing data. (%d MiB: held %d MiB, idle %d MiB, "
                                 "DuckDB %d MiB; soft limit %d MiB)", usage // MIB, held // MIB, self.baseline // MIB,
                                 (usage - held - self.baseline) // MIB, self.soft // MIB)
            else:
                self.log.info("Memory usage back within limits. Accepting data. (held %d MiB)", held // MIB)

    def consume(self, batch: SpanBatch) -> None:
        self._admit(batch, "spans")

    def consume_logs(self, batch: LogBatch) -> None:
        self._admit(batch, "log_records")

    def _admit(self, batch: SpanBatch | LogBatch, what: str) -> None:
        self.count_in(len(batch))
        if self._refusing:
            counters.add(f"processor_refused_{what}", len(batch), processor=self.id)
            raise BackPressureError(f"{self.id}: memory usage is above the soft limit; retry later")
        self.forward(batch)
        self.count_out(len(batch))


_create = lambda cid, cfg, nxt: MemoryLimiterProcessor(cid, cfg, nxt)
factory = Factory("memory_limiter", "processors", MemoryLimiterConfig, traces=_create, logs=_create)
