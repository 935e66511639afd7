"""Agent Lightning's (0.3) reward convention, the one rule the reward processor, the in-memory
adapters and `spanpipe.emit`'s reading helpers share.

A reward is `agentlightning.reward.<i>.name` / `.value` (index 0 primary) on any span — Agent
Lightning's emitter puts them on an `agentlightning.annotation` span, and its readers accept them
anywhere; the legacy forms are a `reward` attribute on an `agentlightning.annotation` span, or on
an `agentlightning.reward` span (what Agent Lightning's emitter wrote before 0.3).
"""

from __future__ import annotations

from typing import Any

from spanpipe.emit.attributes import under_prefix

ANNOTATION = "agentlightning.annotation"
LEGACY_REWARD_SPAN = "agentlightning.reward"
REWARD_PREFIX = "agentlightning.reward"


class MalformedReward(ValueError):
    pass


_FIRST_DIMENSION = (REWARD_PREFIX + ".0.value", REWARD_PREFIX + ".0.name")


def has_primary_reward_keys(attrs: dict[str, Any]) -> bool:
    """O(1), for the per-span path: a reward has a dimension 0; keys without one can only be
    malformed, which the collector treats as no reward anyway."""
    return _FIRST_DIMENSION[0] in attrs or _FIRST_DIMENSION[1] in attrs


def reward_dimensions(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """`[{"name", "value"}]`, primary first; [] without reward keys; MalformedReward when the keys
    are there but do not make a list of dimensions with numeric values (Agent Lightning raises too)."""
    listed = under_prefix(attrs, REWARD_PREFIX)
    if not listed:
        return []
    if not isinstance(listed, list) or not all(isinstance(d, dict) and "value" in d for d in listed):
        raise MalformedReward(f"malformed reward attributes: {listed!r}")
    out = []
    for d in listed:  # Agent Lightning validates each as {name: str, value: float}
        if not isinstance(d.get("name"), str):
            raise MalformedReward(f"reward dimension without a name: {d!r}")
        try:
            number = float(d["value"])
        except (TypeError, ValueError):
            raise MalformedReward(f"reward value is not a number: {d['value']!r}") from None
        out.append({"name": d["name"], "value": number})
    return out


def legacy_reward(name: str | None, attrs: dict[str, Any]) -> Any:
    """The legacy `reward` attribute of an annotation or pre-0.3 reward span (None otherwise)."""
    return attrs.get("reward") if name == ANNOTATION or name == LEGACY_REWARD_SPAN else None
