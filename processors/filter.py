"""The `filter` processor: drops spans that match any OTTL condition (otelcol's shape).

```yaml
filter:
  error_mode: ignore          # propagate | ignore | silent
  traces:
    span:
      - 'attributes["http.route"] == "/health"'
      - 'IsMatch(name, "^heartbeat") and kind == SPAN_KIND_INTERNAL'
```
The condition language is the OTTL subset in processors/ottl.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipeline.component import BatchTransform, Consumer
from pipeline.config import ComponentConfig
from pipeline.errors import PermanentError
from pipeline.registry import Factory
from pipeline.spanbatch import SpanBatch
from pipeline.telemetry import counters
from processors.ottl import ConditionError, SpanView, compile_condition


class TraceConditions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    span: list[str] = []


class FilterConfig(ComponentConfig):
    error_mode: Literal["propagate", "ignore", "silent"] = "propagate"
    traces: TraceConditions = TraceConditions()

    def validate_config(self) -> None:
        for i, cond in enumerate(self.traces.span):
            try:
                compile_condition(cond)
            except ConditionError as exc:
                raise ValueError(f"traces::span::{i}: {exc} in '{cond}'") from None


class FilterProcessor(BatchTransform):
    def __init__(self, component_id: str, config: FilterConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.config = config
        self.conditions = [compile_condition(c) for c in config.traces.span]

    def process(self, batch: SpanBatch) -> SpanBatch:
        if not self.conditions:
            return batch
        keep = []
        for i in range(len(batch)):
            view = SpanView.of(batch, i)
            try:
                drop = any(c(view) for c in self.conditions)
            except Exception as exc:  # noqa: BLE001 - a condition failing on odd data
                if self.config.error_mode == "propagate":
                    raise PermanentError(f"{self.id}: condition failed: {exc}") from None
                if self.config.error_mode == "ignore":
                    self.log.warning("condition failed on span %s: %s", batch.span_id[i], exc)
                drop = False
            if not drop:
                keep.append(i)
        dropped = len(batch) - len(keep)
        if not dropped:
            return batch
        counters.add("processor_filter_spans_filtered", dropped, processor=self.id)
        return batch.take(keep)


factory = Factory("filter", "processors", FilterConfig,
                  lambda cid, cfg, nxt: FilterProcessor(cid, cfg, nxt))
