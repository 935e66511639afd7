"""What one instrumentation convention states, in one place: how spanpipe recognises its LLM, agent,
tool and reward spans, and how it reads their messages, usage, models, token ids, response id and
rewards.

Each convention is one module of `spanpipe.semconv.conventions`; `conventions.ALL` lists them. Every
reader goes through that list — the span kind (`span_types`), the agent name in Python and SQL
(`agents`), the `llm_calls` fields (`llm_call`), rewards (`rewards`: the reward processor, the
warehouse exporters' derived columns, the in-memory adapters and `spanpipe.emit`'s reading helpers)
and the usage SQL of the warehouse schema. Adding a convention is one module plus its cases in
tests/test_semconv.py.

Where two conventions could both answer, order decides. Key lists (usage, models, provider, response
id, token ids) are read in `conventions.ALL` order; span-kind rules, agent rules and message readers
carry a `rank` (lowest first), because those interleave across conventions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

Attrs = Mapping[str, Any]
Events = Sequence[Mapping[str, Any]] | None
Message = dict[str, Any]
Dimension = dict[str, Any]  # {"name": str, "value": float, "source": str}


class Malformed(ValueError):
    """Reward keys are there but do not make a reward (the collector keeps the span without one;
    `spanpipe.emit`'s readers raise, as Agent Lightning's do)."""


def reward_number(value: Any, what: str) -> float:
    """A finite float from a number or numeric text; Malformed otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Malformed(f"{what} is not a number: {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise Malformed(f"{what} is not a number: {value!r}") from None
    if math.isnan(number) or math.isinf(number):
        raise Malformed(f"{what} is not finite: {value!r}")
    return number


@dataclass(frozen=True)
class KindRule:
    """`decide(span name, attributes)` → 'llm' | 'tool' | 'agent' | 'other' | an Agent Lightning kind,
    or None to let the next rule decide. Ranks in use: 10 a kind by span name, 15–40 an explicit
    kind attribute, 60 an operation name (with the configured LLM span name), 70–85 guesses."""

    rank: int
    decide: Callable[[str, Attrs], str | None]


@dataclass(frozen=True)
class AgentRule:
    """The agent a span stands for is attribute `key`, when the span has attribute `when_attr`
    = value (if given) and a name starting with `when_name_prefix` (if given). Simple enough to be
    written as SQL too (`agents.agent_name_sql`)."""

    rank: int
    key: str
    when_attr: tuple[str, str] | None = None
    when_name_prefix: str | None = None


@dataclass(frozen=True)
class MessagesReader:
    """Reads a call's input and output messages in the canonical shape (role + parts), or None.
    `label` is what `llm_calls.convention` reports when this reader found the messages; `title`
    names it for users ("… records no token ids")."""

    rank: int
    label: str
    title: str
    inputs: Callable[[Attrs, Events], list[Message] | None] | None = None
    outputs: Callable[[Attrs, Events], list[Message] | None] | None = None


@dataclass(frozen=True)
class RewardRule:
    """`read(span name, attributes, events)` → reward dimensions (raises Malformed); `may_hold` is a
    cheap test that the span can hold one, so the per-span path skips `read` for the rest. Rules
    are read by rank; the first dimension found is the primary reward."""

    rank: int
    may_hold: Callable[[str, Attrs, Events], bool]
    read: Callable[[str, Attrs, Events], list[Dimension]]


@dataclass(frozen=True)
class TokenIds:
    prompt: list[int] | None = None
    response: list[int] | None = None
    logprobs: Any = None  # OpenAI's chat form: [{"token", "logprob", ...}, ...]


@dataclass(frozen=True)
class Field:
    """Attribute `key`; with `json_field`, that field of the JSON document the attribute holds."""

    key: str
    json_field: str | None = None


@dataclass(frozen=True)
class Convention:
    name: str
    title: str  # how users know it, for messages such as "recorded by OpenInference without token ids"
    kinds: tuple[KindRule, ...] = ()
    agents: tuple[AgentRule, ...] = ()
    messages: tuple[MessagesReader, ...] = ()
    provider: tuple[Field, ...] = ()
    request_model: tuple[Field, ...] = ()
    response_model: tuple[Field, ...] = ()
    # Where the model server's response id is (what ties a client-side span to the gateway's, and
    # what triplets are deduplicated on). `response_id_on_llm_spans` are read on LLM spans only.
    response_id: tuple[Field, ...] = ()
    response_id_on_llm_spans: tuple[Field, ...] = ()
    input_tokens: tuple[str, ...] = ()  # usage keys of this call (never an agent's aggregate)
    output_tokens: tuple[str, ...] = ()
    token_ids: Callable[[Attrs], TokenIds] | None = None
    rewards: RewardRule | None = None
