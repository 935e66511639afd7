"""Microsoft Agent Lightning: the spans its emitters (and `spanpipe.emit`) make, its reward keys,
and the token-id keys of its LLM proxy and of 1.0's gateway (which the llm_gateway receiver writes
too).

A reward is `agentlightning.reward.<i>.name` / `.value` (index 0 primary) on any span — Agent
Lightning's emitter puts them on an `agentlightning.annotation` span, and its readers accept them
anywhere; the legacy forms are a `reward` attribute on an `agentlightning.annotation` span, or on an
`agentlightning.reward` span (what its emitter wrote before 0.3).
"""

from __future__ import annotations

from spanpipe.semconv.convention import (Attrs, Convention, Dimension, Events, Field, KindRule, Malformed, RewardRule,
                                         TokenIds, reward_number)
from spanpipe.semconv.values import int_list, loose, under_prefix

ANNOTATION = "agentlightning.annotation"
LEGACY_REWARD_SPAN = "agentlightning.reward"
REWARD_PREFIX = "agentlightning.reward"
SOURCE, LEGACY_SOURCE = "agentlightning", "agentlightning.legacy"

# The spans its emitters make; a reward annotation becomes 'reward' (by its reward, not its name).
SPAN_TYPES = {
    "agentlightning.message": "message",
    "agentlightning.annotation": "annotation",
    "agentlightning.object": "object",
    "agentlightning.exception": "exception",
    "agentlightning.operation": "operation",
    "agentlightning.rollout": "rollout",
}

PROMPT_TOKEN_IDS = ("prompt_token_ids", "agentlightning.operation.output.prompt_token_ids")
RESPONSE_TOKEN_IDS = ("response_token_ids", "agentlightning.operation.output.response_token_ids.0",
                      "agentlightning.operation.output.choices.0.token_ids",
                      "agentlightning.operation.output.choices.0.provider_specific_fields.token_ids")
LOGPROBS = "logprobs.content"

_FIRST_DIMENSION = (REWARD_PREFIX + ".0.value", REWARD_PREFIX + ".0.name")


def has_reward_keys(name: str, attrs: Attrs, events: Events = None) -> bool:
    """O(1), for the per-span path: a reward has a dimension 0 (keys without one can only be
    malformed), or is the legacy `reward` attribute of a reward span."""
    return _FIRST_DIMENSION[0] in attrs or _FIRST_DIMENSION[1] in attrs or \
        ("reward" in attrs and name in (ANNOTATION, LEGACY_REWARD_SPAN))


def reward_dimensions(name: str, attrs: Attrs, events: Events = None) -> list[Dimension]:
    """Primary first; [] without reward keys; Malformed when the keys are there but do not make a
    list of named dimensions with numeric values (Agent Lightning raises too)."""
    listed = under_prefix(attrs, REWARD_PREFIX)
    if not listed:
        legacy = attrs.get("reward") if name in (ANNOTATION, LEGACY_REWARD_SPAN) else None
        return [] if legacy is None else [{"name": "primary", "value": reward_number(legacy, "reward"),
                                           "source": LEGACY_SOURCE}]
    if not isinstance(listed, list) or not all(isinstance(d, dict) and "value" in d for d in listed):
        raise Malformed(f"malformed reward attributes: {listed!r}")
    out = []
    for d in listed:  # Agent Lightning validates each as {name: str, value: float}
        if not isinstance(d.get("name"), str):
            raise Malformed(f"reward dimension without a name: {d!r}")
        out.append({"name": d["name"], "value": reward_number(d["value"], "reward value"), "source": SOURCE})
    return out


def _span_type(name: str, attrs: Attrs) -> str | None:
    return SPAN_TYPES.get(name)


def _first_ids(attrs: Attrs, keys: tuple[str, ...]) -> list[int] | None:
    for key in keys:
        ids = int_list(attrs.get(key))
        if ids is not None:
            return ids
    return None


def _token_ids(attrs: Attrs) -> TokenIds:
    return TokenIds(_first_ids(attrs, PROMPT_TOKEN_IDS), _first_ids(attrs, RESPONSE_TOKEN_IDS),
                    loose(attrs.get(LOGPROBS)))


CONVENTION = Convention(
    name="agentlightning",
    title="Agent Lightning",
    kinds=(KindRule(10, _span_type),),
    response_id=(Field("agentlightning.operation.output.id"),),
    token_ids=_token_ids,
    rewards=RewardRule(10, has_reward_keys, reward_dimensions),
)
