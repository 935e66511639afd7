"""Rewards and span types, read from a batch by every convention spanpipe knows — what the
`reward` processor puts in the promoted columns, and what a warehouse exporter derives itself when a
pipeline has no `reward` processor.

Rewards read:
* Agent Lightning: `agentlightning.reward.<i>.name` / `.value` (index 0 is primary) and the
  legacy `reward` attribute on `agentlightning.annotation` spans (`semconv.agentlightning`);
* AgentOps: `agentops.task.output` / `agentops.entity.output` JSON `{"type": "reward", "value": x}`;
* OTel GenAI: `gen_ai.evaluation.result` events (`gen_ai.evaluation.score.value`, `gen_ai.evaluation.name`);
* OpenInference: `annotations.<i>.annotation.score` / `.name`;
* `extra_keys`: any span attribute holding a number.
A malformed reward (a non-number, reward keys that are not a list of dimensions) leaves the span
without a reward; it is counted, never an error.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

import orjson

from spanpipe.semconv import agentlightning
from spanpipe.semconv.llm_call import response_id as response_id_of
from spanpipe.semconv.span_types import classify
from spanpipe.spanbatch import SpanBatch
from spanpipe.userregex import NameMatcher

DEFAULT_LLM_SPAN_NAME = r"openai\.chat\.completion"
_OI_DIM = re.compile(r"^annotations\.(\d+)\.annotation\.(score|name)$")


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


@dataclass
class Promoted:
    """The promoted columns of one batch, and what reading them found."""

    span_type: list[str | None]
    reward: list[float | None]
    response_id: list[str | None]
    reward_dimensions: list[list[dict[str, Any]] | None]
    extracted: int
    malformed: int


class RewardReader:
    def __init__(self, llm_span_name_pattern: str = DEFAULT_LLM_SPAN_NAME, extra_keys: Iterable[str] = (),
                 classify_spans: bool = True, log: logging.Logger | None = None) -> None:
        self.llm_name = NameMatcher(llm_span_name_pattern)
        self.extra_keys = list(extra_keys)
        self.classify_spans = classify_spans
        self.log = log or logging.getLogger("spanpipe.semconv.rewards")

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
        for key in self.extra_keys:
            if key in attrs:
                dims.append({"name": key, "value": _number(attrs[key], key), "source": "extra"})
        return dims

    def classify(self, name: str, attrs: dict[str, Any]) -> str:
        return classify(name, attrs, self.llm_name)

    def read(self, batch: SpanBatch) -> Promoted:
        n = len(batch)
        out = Promoted([None] * n, [None] * n, [None] * n, [None] * n, 0, 0)
        for i in range(n):
            attrs, name = batch.attributes[i], batch.name[i]
            try:
                dims = self.rewards_of(name, attrs, batch.events[i])
            except Malformed as exc:
                out.malformed += 1
                self.log.debug("span %s/%s (%s): reward not set: %s", batch.trace_id[i], batch.span_id[i], name, exc)
                dims = []
            kind = self.classify(name, attrs) if self.classify_spans else None
            if dims:
                out.extracted += 1
                out.reward_dimensions[i] = dims
                out.reward[i] = dims[0]["value"]
                # An evaluation event on an LLM call scores that call; it stays an LLM span.
                only_eval = all(d["source"] == "gen_ai.evaluation" for d in dims)
                out.span_type[i] = kind if only_eval and kind == "llm" else "reward"
            else:
                out.span_type[i] = kind
            out.response_id[i] = response_id_of(attrs, llm=out.span_type[i] == "llm")
        return out
