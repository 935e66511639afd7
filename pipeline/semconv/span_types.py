"""What kind of span this is (llm, tool, agent, ...), by the span-kind rules of every convention
(`semconv.conventions`), tried by rank.

Used at ingest by the `reward` processor (the `span_type` column) and at read time by the
`llm_calls` view and the adapters, so both sides agree on what an LLM call is.
"""

from __future__ import annotations

import re
from typing import Any

from spanpipe.semconv.convention import KindRule
from spanpipe.semconv.conventions import ALL

# Agent Lightning's default LLM span name (its OpenAI instrumentation); the reward processor's
# `llm_span_name_pattern` replaces it.
DEFAULT_LLM_NAME = re.compile(r"openai\.chat\.completion")
_BY_NAME_PATTERN_RANK = 60

_RULES: tuple[KindRule, ...] = tuple(sorted((r for c in ALL for r in c.kinds), key=lambda r: r.rank))
_BEFORE = tuple(r.decide for r in _RULES if r.rank <= _BY_NAME_PATTERN_RANK)
_AFTER = tuple(r.decide for r in _RULES if r.rank > _BY_NAME_PATTERN_RANK)


def classify(name: str, attrs: dict[str, Any], llm_name: Any = DEFAULT_LLM_NAME) -> str:
    """llm | tool | agent | Agent Lightning's kinds | other, whatever instrumentation made the span.
    `llm_name` (anything with `.search`) marks LLM spans by name, with the operation-name rules."""
    for decide in _BEFORE:
        kind = decide(name, attrs)
        if kind is not None:
            return kind
    if llm_name.search(name):
        return "llm"
    for decide in _AFTER:
        kind = decide(name, attrs)
        if kind is not None:
            return kind
    return "other"
