"""Rewards, span type and response id of one span, by the rules of every convention
(`semconv.conventions`): what the reward processor puts in the promoted columns, what a warehouse
exporter derives itself when a pipeline has no `reward` processor, what the in-memory adapters
compute, and what `spanpipe.emit`'s reading helpers return.

The reward rules are read by rank (Agent Lightning, AgentOps, OTel GenAI evaluation events,
OpenInference annotations), then `extra_keys` (any span attribute holding a number). The first
dimension is the primary reward. A malformed reward raises `Malformed`: the collector keeps the
span without a reward and counts it; `spanpipe.emit`'s readers raise it (a ValueError, as Agent
Lightning's do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from spanpipe.semconv.convention import Attrs, Dimension, Events, Malformed, RewardRule, reward_number
from spanpipe.semconv.conventions import ALL
from spanpipe.semconv.conventions.genai import EVALUATION_SOURCE
from spanpipe.semconv.llm_call import response_id
from spanpipe.semconv.span_types import DEFAULT_LLM_NAME, classify

__all__ = ["Malformed", "SpanReading", "SpanReader", "reward_dimensions"]

_RULES: tuple[RewardRule, ...] = tuple(sorted((c.rewards for c in ALL if c.rewards is not None), key=lambda r: r.rank))


def reward_dimensions(name: str, attrs: Attrs, events: Events = None, extra_keys: Iterable[str] = (),
                      every_key: bool = False) -> list[Dimension]:
    """Every reward dimension on a span ({"name", "value", "source"}), primary first; Malformed.
    The per-span path reads a rule only where its cheap test says a reward may be (a span with
    reward keys but no dimension 0 then has no reward); `every_key` reads every rule, so that such
    keys raise Malformed too, as Agent Lightning's reader does."""
    dims: list[Dimension] = []
    for rule in _RULES:
        if every_key or rule.may_hold(name, attrs, events):
            dims += rule.read(name, attrs, events)
    for key in extra_keys:
        if key in attrs:
            dims.append({"name": key, "value": reward_number(attrs[key], key), "source": "extra"})
    return dims


@dataclass
class SpanReading:
    span_type: str | None
    reward: float | None
    dimensions: list[Dimension] | None
    response_id: str | None
    malformed: str | None = None  # why a reward was not read


class SpanReader:
    """The promoted columns of one span. `llm_name` (anything with `.search`) marks LLM spans by
    name; `classify_spans=False` leaves span_type unset except on reward spans."""

    def __init__(self, llm_name: Any = DEFAULT_LLM_NAME, extra_keys: Iterable[str] = (),
                 classify_spans: bool = True) -> None:
        self.llm_name, self.extra_keys, self.classify_spans = llm_name, tuple(extra_keys), classify_spans

    def read(self, name: str, attrs: Attrs, events: Events) -> SpanReading:
        malformed = None
        try:
            dims = reward_dimensions(name, attrs, events, self.extra_keys)
        except Malformed as exc:
            dims, malformed = [], str(exc)
        kind = classify(name, attrs, self.llm_name) if self.classify_spans else None
        if dims:
            # An evaluation event on an LLM call scores that call; it stays an LLM span.
            only_eval = all(d["source"] == EVALUATION_SOURCE for d in dims)
            kind = kind if only_eval and kind == "llm" else "reward"
        return SpanReading(kind, dims[0]["value"] if dims else None, dims or None,
                           response_id(attrs, llm=kind == "llm"), malformed)
