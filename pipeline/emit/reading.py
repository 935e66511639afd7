"""Reading emitted values back, from OTel `ReadableSpan`s, `EmittedSpan`s or warehouse rows.

A warehouse row is a mapping with `name` and `attributes` (a dict, or the JSON text DuckDB gives
back), e.g. one element of `Warehouse.sql("SELECT * FROM spans").to_pylist()`.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any, Mapping, Sequence

from spanpipe.semconv import agentlightning
from spanpipe.emit.emitters import MESSAGE_BODY, OBJECT_JSON, OBJECT_LITERAL, OBJECT_TYPE

logger = logging.getLogger(__name__)

AGENTOPS_OUTPUT_KEYS = ("agentops.task.output", "agentops.entity.output")


def _name_and_attributes(span: Any) -> tuple[str | None, dict[str, Any]]:
    if isinstance(span, Mapping):
        attrs = span.get("attributes") or {}
        if isinstance(attrs, (str, bytes)):
            attrs = json.loads(attrs)
        return span.get("name"), dict(attrs)
    return getattr(span, "name", None), dict(getattr(span, "attributes", None) or {})


def get_rewards_from_span(span: Any) -> list[dict[str, Any]]:
    """Every `agentlightning.reward.<i>` dimension as `{"name", "value"}`, primary first (a
    malformed one raises ValueError, as Agent Lightning's does)."""
    _, attrs = _name_and_attributes(span)
    return agentlightning.reward_dimensions(attrs)


def get_reward_value(span: Any) -> float | None:
    """The primary reward of a span (Agent Lightning, AgentOps or legacy form), or None."""
    dims = get_rewards_from_span(span)
    if dims:
        return dims[0]["value"]
    name, attrs = _name_and_attributes(span)
    for key in AGENTOPS_OUTPUT_KEYS:
        output = attrs.get(key)
        if isinstance(output, str):
            try:
                output = json.loads(output)
            except json.JSONDecodeError:
                output = None
        if isinstance(output, dict) and output.get("type") == "reward":
            return output.get("value")
    return agentlightning.legacy_reward(name, attrs)


def is_reward_span(span: Any) -> bool:
    return get_reward_value(span) is not None


def find_reward_spans(spans: Sequence[Any]) -> list[Any]:
    return [s for s in spans if is_reward_span(s)]


def find_final_reward(spans: Sequence[Any]) -> float | None:
    """The reward of the last reward span in `spans` (in the order given), or None."""
    for span in reversed(spans):
        value = get_reward_value(span)
        if value is not None:
            return value
    return None


def get_message_value(span: Any) -> str | None:
    _, attrs = _name_and_attributes(span)
    if MESSAGE_BODY not in attrs:
        return None
    message = attrs[MESSAGE_BODY]
    if not isinstance(message, str):
        raise TypeError(f"Message must be a string, got: {type(message)}.")
    return message


_LITERALS = {"str": str, "int": int, "float": float, "bool": lambda s: s.lower() == "true",
             "bytes": lambda s: base64.b64decode(s.encode("utf-8"))}


def get_object_value(span: Any) -> Any:
    _, attrs = _name_and_attributes(span)
    if OBJECT_JSON in attrs:
        try:
            return json.loads(attrs[OBJECT_JSON])
        except (TypeError, ValueError) as exc:
            raise RuntimeError("Failed to deserialize object JSON from span.") from exc
    if OBJECT_LITERAL in attrs:
        kind = attrs.get(OBJECT_TYPE, "str")
        if kind not in _LITERALS:
            raise RuntimeError(f"Unsupported object type for literal deserialization: {kind}")
        return _LITERALS[kind](attrs[OBJECT_LITERAL])
    return None
