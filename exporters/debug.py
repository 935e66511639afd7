"""The `debug` exporter: prints what passes, as otelcol's debug exporter does.

`verbosity: basic` one summary line per batch; `normal` one line per span; `detailed` every
field. `sampling_initial` / `sampling_thereafter` limit output per second like otelcol.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Literal, TextIO

from pydantic import Field

from spanpipe.logbatch import LogBatch
from spanpipe.component import Exporter
from spanpipe.component import ComponentConfig
from spanpipe.registry import Factory
from spanpipe.telemetry import counters
from spanpipe.spanbatch import KIND_NAMES, STATUS_NAMES, SpanBatch, dumps, enum_name


class DebugExporterConfig(ComponentConfig):
    verbosity: Literal["basic", "normal", "detailed"] = "basic"
    sampling_initial: int = Field(2, ge=1)
    sampling_thereafter: int = Field(1, ge=1)


class DebugExporter(Exporter):
    def __init__(self, component_id: str, config: DebugExporterConfig, out: TextIO | None = None) -> None:
        super().__init__(component_id)
        self.config = config
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        self._second = 0
        self._count = 0

    def _sampled(self) -> bool:
        now = int(time.monotonic())
        if now != self._second:
            self._second, self._count = now, 0
        self._count += 1
        if self._count <= self.config.sampling_initial:
            return True
        return (self._count - self.config.sampling_initial) % self.config.sampling_thereafter == 0

    def consume(self, batch: SpanBatch) -> None:
        counters.add("exporter_sent_spans", len(batch), exporter=self.id)
        with self._lock:
            if not self._sampled():
                return
            lines = [f"{self.id}: Traces: {len(batch)} spans, {len(batch.resources)} resources"]
            if self.config.verbosity != "basic":
                for i in range(len(batch)):
                    lines.append(self._span_line(batch, i))
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()

    def consume_logs(self, batch: LogBatch) -> None:
        table = batch.table
        counters.add("exporter_sent_log_records", table.num_rows, exporter=self.id)
        with self._lock:
            if not self._sampled():
                return
            lines = [f"{self.id}: Logs: {table.num_rows} log records"]
            if self.config.verbosity != "basic":
                for r in table.to_pylist():
                    lines.append(f"  {r['event_name'] or '-'} severity={r['severity_number']} "
                                 f"trace={r['trace_id'] or '-'} span={r['span_id'] or '-'} body={r['body']}")
                    if self.config.verbosity == "detailed":
                        lines.append(f"    attributes: {r['attributes']}\n    resource: {r['resource_attributes']}")
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()

    def _span_line(self, b: SpanBatch, i: int) -> str:
        dur_ms = (b.end_time_unix_nano[i] - b.start_time_unix_nano[i]) / 1e6
        line = (f"  {b.name[i]} trace={b.trace_id[i]} span={b.span_id[i]} "
                f"parent={b.parent_span_id[i] or '-'} kind={enum_name(KIND_NAMES, b.kind[i])} "
                f"status={enum_name(STATUS_NAMES, b.status_code[i])} {dur_ms:.3f}ms "
                f"service={b.resources[b.resource_index[i]].service_name or '-'}")
        if self.config.verbosity == "detailed":
            line += (f"\n    attributes: {dumps(b.attributes[i]).decode()}"
                     f"\n    resource: {dumps(b.resource_attributes(i)).decode()}"
                     f"\n    events: {dumps(b.events[i] or []).decode()}"
                     f"\n    links: {dumps(b.links[i] or []).decode()}"
                     + "".join(f"\n    {k}: {v[i]!r}" for k, v in b.extra.items()))
        return line


_create = lambda cid, cfg: DebugExporter(cid, cfg)
factory = Factory("debug", "exporters", DebugExporterConfig, traces=_create, logs=_create)
