"""Agent Lightning's reward convention is one rule: the reward processor (what the warehouse and
the SQL adapters see), `spanpipe.emit`'s reading helpers and the in-memory adapters agree on every
case."""

from __future__ import annotations

import pytest

from componentkit import Sink, create, registry, spans
from spanpipe.emit import get_reward_value, get_rewards_from_span

ANNOTATION = "agentlightning.annotation"
CASES = {
    "two dimensions": (ANNOTATION, {"agentlightning.reward.0.name": "acc", "agentlightning.reward.0.value": 1.0,
                                    "agentlightning.reward.1.name": "len", "agentlightning.reward.1.value": 0.2}, 1.0),
    "any span": ("my.step", {"agentlightning.reward.0.name": "acc", "agentlightning.reward.0.value": 0.5}, 0.5),
    "numeric text": (ANNOTATION, {"agentlightning.reward.0.name": "acc", "agentlightning.reward.0.value": "0.25"}, 0.25),
    "int value": (ANNOTATION, {"agentlightning.reward.0.name": "acc", "agentlightning.reward.0.value": 3}, 3.0),
    "legacy": (ANNOTATION, {"reward": 0.75}, 0.75),
    "legacy elsewhere": ("my.step", {"reward": 0.75}, None),
    "no reward": ("my.step", {"x": 1}, None),
    "bare key": (ANNOTATION, {"agentlightning.reward": 1.0}, None),
    "no name": (ANNOTATION, {"agentlightning.reward.0.value": 1.0}, "malformed"),
    "not a number": (ANNOTATION, {"agentlightning.reward.0.name": "acc", "agentlightning.reward.0.value": "high"}, "malformed"),
    "not a list": (ANNOTATION, {"agentlightning.reward.acc": 1.0}, "malformed"),
}


def through_the_processor(name: str, attrs: dict) -> float | None:
    factory = registry().get("processors", "reward")
    sink = Sink()
    proc = create(factory, factory.config_class.model_validate({}), sink)
    batch, _ = spans(1)
    batch.name[0] = name
    batch.attributes[0] = attrs
    out: list = []
    proc.next = type("Keep", (), {"consume": lambda self, b: out.append(b)})()
    proc.consume(batch)
    return out[0].extra["reward"][0]


def through_emit_reading(name: str, attrs: dict) -> float | str | None:
    try:
        get_rewards_from_span({"name": name, "attributes": attrs})
        return get_reward_value({"name": name, "attributes": attrs})
    except ValueError:
        return "malformed"


@pytest.mark.parametrize("case", list(CASES))
def test_one_reward_rule(case):
    name, attrs, expected = CASES[case]
    assert through_emit_reading(name, attrs) == expected
    # The collector never fails a batch for a malformed reward: the span is kept without one.
    assert through_the_processor(name, attrs) == (None if expected == "malformed" else expected)
