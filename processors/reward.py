"""The `reward` processor: finds rewards and classifies spans, into typed columns.

Fills `span_type` (llm / reward / agent / tool / message / other), `reward` (the primary value
on reward spans), `response_id` (`semconv.llm_call.response_id`: what triplets are deduplicated
on), and a `reward_dimensions` column (every dimension, kept by the DuckDB exporter in the
`reward_dimensions` table).

Rewards it reads:
* Agent Lightning: `agentlightning.reward.<i>.name` / `.value` (index 0 is primary) and the
  legacy `reward` attribute on `agentlightning.annotation` spans — one rule with the adapters and
  `spanpipe.emit` (`spanpipe.semconv.agentlightning`);
* AgentOps: `agentops.task.output` / `agentops.entity.output` JSON `{"type": "reward", "value": x}`;
* OTel GenAI: `gen_ai.evaluation.result` events (`gen_ai.evaluation.score.value`, `gen_ai.evaluation.name`);
* OpenInference: `annotations.<i>.annotation.score` / `.name`;
* `extra_keys`: any span attribute holding a number.
A malformed reward (a non-number, reward keys that are not a list of dimensions) never fails
the batch: the span is kept without a reward, counted in `reward_malformed` and logged at debug.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
from pydantic import Field

from spanpipe import events
from spanpipe.component import BatchTransform, Consumer
from spanpipe.component import ComponentConfig
from spanpipe.registry import Factory
from spanpipe.semconv import agentlightning
from spanpipe.semconv.llm_call import response_id as response_id_of
from spanpipe.semconv.span_types import classify
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters
from spanpipe.userregex import NameMatcher, RegexError, compile_regex

_OI_DIM = re.compile(r"^annotations\.(\d+)\.annotation\.(score|name)$")



class RewardConfig(ComponentConfig):
    extra_keys: list[str] = Field(default_factory=list, description="span attributes holding a numeric reward")
    llm_span_name_pattern: str = r"openai\.chat\.completion"
    classify: bool = True

    def validate_config(self) -> None:
        try:
            compile_regex(self.llm_span_name_pattern)
        except RegexError as exc:
            raise ValueError(f"llm_span_name_pattern: {exc}") from None


class Malformed(ValueError):
    pass


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if isinstance(v, str):
            try:
                f = float(v)
            except ValueError:
                raise Malformed(f"{what} is not a number: {v!r}") from None
        else:
            raise Malformed(f"{what} is not a number: {v!r}")
    else:
        f = float(v)
    if math.isnan(f) or math.isinf(f):
        raise Malformed(f"{what} is not finite: {v!r}")
    return f


def _indexed(attrs: dict[str, Any], pattern: re.Pattern[str], value_field: str, source: str) -> list[dict[str, Any]]:
    dims: dict[int, dict[str, Any]] = {}
    for k, v in attrs.items():
        m = pattern.match(k)
        if m:
            dims.setdefault(int(m.group(1)), {})[m.group(2)] = v
    out = []
    for idx in sorted(dims):
        d = dims[idx]
        if value_field not in d:
            raise Malformed(f"{source} dimension {idx} has a name but no value")
        if "name" not in d or not isinstance(d["name"], str) or not d["name"]:
            raise Malformed(f"{source} dimension {idx} has no name")
        out.append({"name": d["name"], "value": _number(d[value_field], f"{source} dimension {idx}"), "source": source})
    return out


def _agentops(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in ("agentops.task.output", "agentops.entity.output"):
        raw = attrs.get(key)
        if not isinstance(raw, str) or '"reward"' not in raw:
            continue
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # ordinary output text that mentions "reward"
        if isinstance(doc, dict) and doc.get("type") == "reward":
            out.append({"name": doc.get("name") or "primary", "value": _number(doc.get("value"), key), "source": "agentops"})
    return out


def _evaluation_events(events: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for ev in events or ():
        if ev.get("name") != "gen_ai.evaluation.result":
            continue
        a = ev.get("attributes") or {}
        if "gen_ai.evaluation.score.value" not in a:
            raise Malformed("gen_ai.evaluation.result event without gen_ai.evaluation.score.value")
        out.append({"name": a.get("gen_ai.evaluation.name") or "evaluation",
                    "value": _number(a["gen_ai.evaluation.score.value"], "gen_ai.evaluation.score.value"),
                    "source": "gen_ai.evaluation"})
    return out


class RewardProcessor(BatchTransform):
    def __init__(self, component_id: str, config: RewardConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.config = config
        self.llm_name = NameMatcher(config.llm_span_name_pattern)

    def rewards_of(self, name: str, attrs: dict[str, Any], events: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        dims: list[dict[str, Any]] = []
        if agentlightning.has_primary_reward_keys(attrs):
            try:
                dims = [{**d, "source": "agentlightning"} for d in agentlightning.reward_dimensions(attrs)]
            except agentlightning.MalformedReward as exc:
                raise Malformed(str(exc)) from None
        legacy = agentlightning.legacy_reward(name, attrs)
        if not dims and legacy is not None:
            dims = [{"name": "primary", "value": _number(legacy, "reward"), "source": "agentlightning.legacy"}]
        if "agentops.task.output" in attrs or "agentops.entity.output" in attrs:
            dims += _agentops(attrs)
        if events:
            dims += _evaluation_events(events)
        if any(k.startswith("annotations.") for k in attrs):
            dims += _indexed(attrs, _OI_DIM, "score", "openinference")
        for key in self.config.extra_keys:
            if key in attrs:
                dims.append({"name": key, "value": _number(attrs[key], key), "source": "extra"})
        return dims

    def classify(self, name: str, attrs: dict[str, Any]) -> str:
        return classify(name, attrs, self.llm_name)

    def process(self, batch: SpanBatch) -> SpanBatch:
        n = len(batch)
        span_type: list[str | None] = [None] * n
        reward: list[float | None] = [None] * n
        response_id: list[str | None] = [None] * n
        dims_col: list[list[dict[str, Any]] | None] = [None] * n
        extracted = malformed = 0
        for i in range(n):
            attrs, name = batch.attributes[i], batch.name[i]
            try:
                dims = self.rewards_of(name, attrs, batch.events[i])
            except Malformed as exc:
                malformed += 1
                self.log.debug("span %s/%s (%s): reward not set: %s", batch.trace_id[i], batch.span_id[i], name, exc)
                dims = []
            kind = self.classify(name, attrs) if self.config.classify else None
            if dims:
                extracted += 1
                dims_col[i] = dims
                reward[i] = dims[0]["value"]
                # An evaluation event on an LLM call scores that call; it stays an LLM span.
                only_eval = all(d["source"] == "gen_ai.evaluation" for d in dims)
                span_type[i] = kind if only_eval and kind == "llm" else "reward"
            else:
                span_type[i] = kind
            response_id[i] = response_id_of(attrs, llm=span_type[i] == "llm")
        if extracted:
            counters.add("rewards_extracted", extracted, processor=self.id)
            if events.bus.subscribers():
                rollout_col = batch.extra.get("rollout_id")
                for i, dims in enumerate(dims_col):
                    if dims:
                        events.publish(events.REWARD_EXTRACTED, trace_id=batch.trace_id[i], span_id=batch.span_id[i],
                                       rollout_id=rollout_col[i] if rollout_col else None, value=reward[i],
                                       dimensions=dims)
        if malformed:
            counters.add("reward_malformed", malformed, processor=self.id)
        return batch.with_columns(span_type=span_type, reward=reward, response_id=response_id,
                                  reward_dimensions=dims_col)


factory = Factory("reward", "processors", RewardConfig,
                  lambda cid, cfg, nxt: RewardProcessor(cid, cfg, nxt))
