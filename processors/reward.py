"""The `reward` processor: finds rewards and classifies spans, into typed columns.

Fills `span_type` (llm / reward / agent / tool / message / other), `reward` (the primary value
on reward spans), `response_id` (`semconv.llm_call.response_id`: what triplets are deduplicated
on), and a `reward_dimensions` column (every dimension, kept by the DuckDB exporter in the
`reward_dimensions` table). What it reads, and how: `spanpipe.semconv.rewards` (one rule with the
adapters, `spanpipe.emit` and the warehouse exporters). A malformed reward never fails the
batch: the span is kept without a reward, counted in `reward_malformed` and logged at debug.
"""

from __future__ import annotations

from pydantic import Field

from spanpipe import events
from spanpipe.component import BatchTransform, ComponentConfig, Consumer
from spanpipe.processors.reward_reading import ReadRewards
from spanpipe.registry import Factory
from spanpipe.semconv.promoted_columns import DEFAULT_LLM_SPAN_NAME
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters
from spanpipe.userregex import RegexError, compile_regex


class RewardConfig(ComponentConfig):
    extra_keys: list[str] = Field(default_factory=list, description="span attributes holding a numeric reward")
    llm_span_name_pattern: str = DEFAULT_LLM_SPAN_NAME
    classify: bool = True

    def validate_config(self) -> None:
        try:
            compile_regex(self.llm_span_name_pattern)
        except RegexError as exc:
            raise ValueError(f"llm_span_name_pattern: {exc}") from None


class RewardProcessor(BatchTransform):
    def __init__(self, component_id: str, config: RewardConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.config = config
        self._derivation = ReadRewards(config.llm_span_name_pattern, config.extra_keys, config.classify, self.log)
        self.reader = self._derivation.reader

    def derivation(self) -> ReadRewards:
        return self._derivation

    def process(self, batch: SpanBatch) -> SpanBatch:
        read = self._derivation.of(batch)
        if read.extracted:
            counters.add("rewards_extracted", read.extracted, processor=self.id)
            if events.bus.subscribers():
                rollout_col = batch.extra.get("rollout_id")
                for i, dims in enumerate(read.reward_dimensions):
                    if dims:
                        events.publish(events.REWARD_EXTRACTED, trace_id=batch.trace_id[i], span_id=batch.span_id[i],
                                       rollout_id=rollout_col[i] if rollout_col else None, value=read.reward[i],
                                       dimensions=dims)
        if read.malformed:
            counters.add("reward_malformed", read.malformed, processor=self.id)
        return batch.with_columns(span_type=read.span_type, reward=read.reward, response_id=read.response_id,
                                  reward_dimensions=read.reward_dimensions)


factory = Factory("reward", "processors", RewardConfig,
                  lambda cid, cfg, nxt: RewardProcessor(cid, cfg, nxt),
                  adds_columns=("span_type", "reward", "response_id", "reward_dimensions"))
