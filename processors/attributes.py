"""The `attributes` processor: otelcol's attribute actions on span attributes, with include/exclude."""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field

from spanpipe.component import BatchTransform, Consumer
from spanpipe.component import ComponentConfig
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch
from spanpipe.processors.attraction import Action, Actions
from spanpipe.processors.matching import Matcher, MatchProperties, validate_kinds


class AttributesConfig(ComponentConfig):
    actions: list[Action] = Field(min_length=1)
    include: MatchProperties | None = None
    exclude: MatchProperties | None = None

    def validate_config(self) -> None:
        validate_kinds(self.include, "include")
        validate_kinds(self.exclude, "exclude")


class AttributesProcessor(BatchTransform):
    def __init__(self, component_id: str, config: AttributesConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.actions = Actions(config.actions)
        self.include = Matcher(config.include) if config.include else None
        self.exclude = Matcher(config.exclude) if config.exclude else None

    def process(self, batch: SpanBatch) -> SpanBatch:
        new_attrs = list(batch.attributes)
        for i, attrs in enumerate(batch.attributes):
            if self.include or self.exclude:
                res = batch.resources[batch.resource_index[i]]
                args = (batch.name[i], batch.kind[i], res.service_name, attrs, res.attributes)
                if self.include and not self.include.matches(*args):
                    continue
                if self.exclude and self.exclude.matches(*args):
                    continue
            new_attrs[i] = self.actions.apply(attrs)
        return replace(batch, attributes=new_attrs)


factory = Factory("attributes", "processors", AttributesConfig,
                  lambda cid, cfg, nxt: AttributesProcessor(cid, cfg, nxt))
