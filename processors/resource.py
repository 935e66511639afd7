"""The `resource` processor: otelcol's attribute actions on resource attributes (once per resource)."""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field

from spanpipe.component import BatchTransform, Consumer
from spanpipe.component import ComponentConfig
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch
from spanpipe.processors.attraction import Action, Actions


class ResourceConfig(ComponentConfig):
    attributes: list[Action] = Field(min_length=1)


class ResourceProcessor(BatchTransform):
    def __init__(self, component_id: str, config: ResourceConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.actions = Actions(config.attributes)

    def process(self, batch: SpanBatch) -> SpanBatch:
        resources = []
        for r in batch.resources:
            attrs = self.actions.apply(r.attributes)
            service = attrs.get("service.name")
            resources.append(replace(r, attributes=attrs, service_name=service if isinstance(service, str) else None))
        return replace(batch, resources=resources)


factory = Factory("resource", "processors", ResourceConfig,
                  lambda cid, cfg, nxt: ResourceProcessor(cid, cfg, nxt))
