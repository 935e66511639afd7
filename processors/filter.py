"""The `filter` processor: drops spans (or log records) that match any OTTL condition (otelcol's shape).

```yaml
filter:
  error_mode: ignore          # propagate | ignore | silent
  traces:
    span:
      - 'attributes["http.route"] == "/health"'
      - 'IsMatch(name, "^heartbeat") and kind == SPAN_KIND_INTERNAL'
  logs:
    log_record:
      - 'severity_number < SEVERITY_NUMBER_WARN'
```
The condition language is the OTTL subset in processors/ottl.py; `traces` conditions apply in
traces pipelines, `logs` conditions in logs pipelines.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict

from spanpipe.logbatch import LogBatch
from spanpipe.component import BatchTransform, Consumer
from spanpipe.component import ComponentConfig
from spanpipe.errors import PermanentError
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters
from spanpipe.processors.ottl import LOG, SPAN, ConditionError, Context, LogView, SpanView, compile_condition


class TraceConditions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    span: list[str] = []


class LogConditions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    log_record: list[str] = []


def _compiled(conditions: list[str], ctx: Context, where: str) -> list[Callable[[Any], Any]]:
    out = []
    for i, cond in enumerate(conditions):
        try:
            out.append(compile_condition(cond, ctx))
        except ConditionError as exc:
            raise ValueError(f"{where}::{i}: {exc} in '{cond}'") from None
    return out


class FilterConfig(ComponentConfig):
    error_mode: Literal["propagate", "ignore", "silent"] = "propagate"
    traces: TraceConditions = TraceConditions()
    logs: LogConditions = LogConditions()

    def validate_config(self) -> None:
        _compiled(self.traces.span, SPAN, "traces::span")
        _compiled(self.logs.log_record, LOG, "logs::log_record")


class FilterProcessor(BatchTransform):
    def __init__(self, component_id: str, config: FilterConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.config = config
        self.conditions = _compiled(config.traces.span, SPAN, "traces::span")
        self.log_conditions = _compiled(config.logs.log_record, LOG, "logs::log_record")

    def _keep(self, views: Any, conditions: list[Callable[[Any], Any]], describe: Callable[[int], str]) -> list[int]:
        """Positions of the items no condition matches; a condition that fails follows error_mode."""
        keep = []
        for i, view in enumerate(views):
            try:
                drop = any(c(view) for c in conditions)
            except Exception as exc:  # noqa: BLE001 - a condition failing on odd data
                if self.config.error_mode == "propagate":
                    raise PermanentError(f"{self.id}: condition failed: {exc}") from None
                if self.config.error_mode == "ignore":
                    self.log.warning("condition failed on %s: %s", describe(i), exc)
                drop = False
            if not drop:
                keep.append(i)
        return keep

    def process(self, batch: SpanBatch) -> SpanBatch:
        if not self.conditions:
            return batch
        keep = self._keep((SpanView.of(batch, i) for i in range(len(batch))), self.conditions,
                          lambda i: f"span {batch.span_id[i]}")
        dropped = len(batch) - len(keep)
        if not dropped:
            return batch
        counters.add("processor_filter_spans_filtered", dropped, processor=self.id)
        return batch.take(keep)

    def consume_logs(self, batch: LogBatch) -> None:
        table = batch.table
        self.count_in(table.num_rows)
        if self.log_conditions:
            keep = self._keep(LogView.rows(table), self.log_conditions, lambda i: f"log record {i}")
            if len(keep) < table.num_rows:
                counters.add("processor_filter_logs_filtered", table.num_rows - len(keep), processor=self.id)
                table = table.take(keep)
        if table.num_rows:
            self.next.consume_logs(LogBatch(table))  # type: ignore[attr-defined]
        self.count_out(table.num_rows)


_create = lambda cid, cfg, nxt: FilterProcessor(cid, cfg, nxt)
factory = Factory("filter", "processors", FilterConfig, traces=_create, logs=_create)
