"""The exporter helper's config keys, with otelcol's names and defaults.

```yaml
exporters:
  otlp:
    timeout: 5s
    sending_queue: {enabled: true, num_consumers: 10, queue_size: 1000, storage: file_storage,
                    block_on_overflow: false, drain_timeout: 30s,
                    batch: {min_size: 0, max_size: 0, flush_timeout: 200ms}}
    retry_on_failure: {enabled: true, initial_interval: 5s, max_interval: 30s, max_elapsed_time: 300s,
                       multiplier: 1.5, randomization_factor: 0.5}
```
An exporter type may change the defaults (`helper_defaults`), e.g. the DuckDB warehouse has one
writer and never gives up; what a user writes always wins, key by key.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spanpipe.component import ComponentConfig
from spanpipe.configtypes import Duration


class QueueBatchConfig(BaseModel):
    """Batching inside the queue: a consumer merges queued requests before one send."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
    min_size: int = Field(0, ge=0, description="spans; wait up to flush_timeout for this many")
    max_size: int = Field(0, ge=0, description="spans per send; 0 = no limit")
    flush_timeout: Duration = "200ms"  # type: ignore[assignment]
    sizer: str = "items"

    @model_validator(mode="after")
    def _check(self) -> QueueBatchConfig:
        if self.sizer != "items":
            raise ValueError(f"sizer: only 'items' (spans) is supported, got '{self.sizer}'")
        if self.max_size and self.min_size > self.max_size:
            raise ValueError("min_size must not exceed max_size")
        return self


class QueueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
    enabled: bool = True
    num_consumers: int = Field(10, ge=1, le=1000)
    queue_size: int = Field(1000, gt=0, description="requests waiting to be sent")
    storage: str | None = Field(None, description="id of a file_storage extension: the queue lives on disk")
    block_on_overflow: bool = False
    drain_timeout: Duration = "30s"  # type: ignore[assignment]
    batch: QueueBatchConfig | None = None


class RetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
    enabled: bool = True
    initial_interval: Duration = "5s"  # type: ignore[assignment]
    max_interval: Duration = "30s"  # type: ignore[assignment]
    max_elapsed_time: Duration = Field("300s", description="0 = retry for ever")  # type: ignore[assignment]
    multiplier: float = Field(1.5, ge=1.0)
    randomization_factor: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> RetryConfig:
        if self.enabled and self.initial_interval <= 0:
            raise ValueError("initial_interval must be positive")
        if self.max_interval < self.initial_interval:
            raise ValueError("max_interval must not be below initial_interval")
        return self


def _merge(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class ExporterHelperConfig(ComponentConfig):
    helper_defaults: ClassVar[dict[str, Any]] = {}

    timeout: Duration = "5s"  # type: ignore[assignment]
    sending_queue: QueueConfig = Field(default_factory=QueueConfig)
    retry_on_failure: RetryConfig = Field(default_factory=RetryConfig)

    def extension_refs(self) -> dict[str, str]:
        storage = self.sending_queue.storage if self.sending_queue.enabled else None
        return {"sending_queue::storage": storage} if storage else {}

    @model_validator(mode="before")
    @classmethod
    def _apply_type_defaults(cls, data: Any) -> Any:
        if not cls.helper_defaults or not isinstance(data, dict):
            return data
        given = {k: ({} if v is None else v) for k, v in data.items()}
        return _merge(cls.helper_defaults, given)
