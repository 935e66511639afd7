"""Reading emitted values back, from OTel `ReadableSpan`s, `EmittedSpan`s or warehouse rows.

A warehouse row is a mapping with `name` and `attributes` (a dict, or the JSON text DuckDB gives
back), e.g. one element of `Warehouse.sql("SELECT * FROM spans").to_pylist()`.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any, Mapping, Sequence

from spanpipe.semconv.rewards import reward_dimensions
from spanpipe.emit.emitters import MESSAGE_BODY, OBJECT_JSON, OBJECT_LITERAL, OBJECT_TYPE

logger = logging.getLogger(__name__)


def _events(span: Any) -> list[dict[str, Any]] | None:
    if isinstance(span, Mapping):
        events = span.get("events")
        return json.loads(events) if isinstance(events, (str, bytes)) else events
    return [{"name": e.name, "attributes": dict(e.attributes or {})} for e in getattr(span, "events", None) or ()]


def _name_and_attributes(span: Any) -> tuple[str | None, dict[str, Any]]:
    if isinstance(span, Mapping):
        attrs = span.get("attributes") or {}
        if isinstance(attrs, (str, bytes)):
            attrs = json.loads(attrs)
        return span.get("name"), dict(attrs)
    return getattr(span, "name", None), dict(getattr(span, "attributes", None) or {})


def get_rewards_from_span(span: Any) -> list[dict[str, Any]]:
    """Every reward dimension on a span as `{"name", "value"}`, primary first, by the collector's
    rules (`spanpipe.semconv.rewards`: Agent Lightning's `agentlightning.reward.<i>` keys and legacy
    form, AgentOps outputs, GenAI evaluation events, OpenInference annotations). A malformed reward
    raises ValueError, as Agent Lightning's does."""
    name, attrs = _name_and_attributes(span)
    dims = reward_dimensions(name or "", attrs, _events(span), every_key=True)
    return [{"name": d["name"], "value": d["value"]} for d in dims]


def get_reward_value(span: Any) -> float | None:
    """The primary reward of a span, or None."""
    dims = get_rewards_from_span(span)
    return dims[0]["value"] if dims else None


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
