"""Turning Python values into OTel span attributes the way Agent Lightning 0.3 does.

Byte-compatibility with Agent Lightning matters: an algorithm written against its store must read
our spans unchanged, so nested values are flattened into dotted keys with the same rules
(lists of one primitive type stay lists unless `expand_leaf_lists`; other lists are indexed), and
values OTel can't carry become `json.dumps` strings with default separators.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from spanpipe.semconv.conventions.agentlightning import REWARD_PREFIX  # noqa: F401 - emitters write rewards under it

logger = logging.getLogger(__name__)

Primitive = (str, int, float, bool)

LINK_PREFIX = "agentlightning.link"
TAG_PREFIX = "agentlightning.tag"


def _kind(value: Any) -> type:
    for t in (bool, int, float):
        if isinstance(value, t):
            return t
    return str


def flatten(value: dict[str, Any] | list[Any], *, expand_leaf_lists: bool = False) -> dict[str, Any]:
    """`{"a": {"b": 1, "c": [2, 3]}}` → `{"a.b": 1, "a.c": [2, 3]}` (`a.c.0`, `a.c.1` when expanding)."""
    flat: dict[str, Any] = {}

    def walk(v: Any, key: str) -> None:
        if isinstance(v, dict):
            for k, sub in v.items():
                if not isinstance(k, str):
                    raise ValueError(f"Only string keys are supported in dictionaries, got '{k}' of type {type(k)} in {key}")
                walk(sub, f"{key}.{k}" if key else k)
            return
        if isinstance(v, list):
            leafy = bool(v) and all(isinstance(i, Primitive) for i in v)
            if leafy and key and not expand_leaf_lists:
                if len({_kind(i) for i in v}) == 1:
                    flat[key] = v
                    return
                logger.warning("List attribute '%s' mixes primitive types; expanding indexed keys instead.", key)
            for i, item in enumerate(v):
                walk(item, f"{key}.{i}" if key else str(i))
            return
        flat[key] = v

    walk(value, "")
    return flat


def _list_value(items: list[Any]) -> list[Any]:
    if all(isinstance(i, str) for i in items):
        return list(items)
    if all(isinstance(i, bool) for i in items):
        return list(items)
    if all(isinstance(i, (int, bool)) for i in items):
        return [int(i) for i in items]
    if all(isinstance(i, (int, float, bool)) for i in items):
        return [float(i) for i in items]
    raise ValueError(f"List must contain only one type of primitive values, got: {set(type(i) for i in items)}.")


def sanitize_value(value: Any) -> Any:
    if isinstance(value, Primitive):
        return value
    if isinstance(value, list):
        try:
            return _list_value(value)
        except ValueError as exc:
            logger.warning("Failed to sanitize list attribute. Fallback to JSON serialization: %s", exc)
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Object must be JSON serializable, got: {type(value)}.") from exc


def sanitize(attributes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in attributes.items():
        try:
            out[k] = sanitize_value(v)
        except ValueError as exc:
            raise ValueError(f"Failed to sanitize attribute '{k}': {exc}") from exc
    return out


def check(attributes: dict[str, Any]) -> None:
    """Refuse what OTel attributes can't hold (annotations are strict, as in Agent Lightning)."""
    for k, v in attributes.items():
        if not isinstance(k, str):
            raise ValueError(f"Attribute key must be a string, got {type(k)} for key '{k}'")
        if isinstance(v, list):
            try:
                _list_value(v)
            except ValueError as exc:
                raise ValueError(f"Failed to sanitize list attribute '{k}': {exc}") from exc
        elif not isinstance(v, Primitive):
            raise ValueError(f"Attribute value must be a string, int, float, bool, or list of these, "
                             f"got {type(v)} for value '{v}'")


def flat_sanitized(attributes: dict[str, Any] | None) -> dict[str, Any]:
    return sanitize(flatten(attributes)) if attributes else {}


def make_tag_attributes(tags: list[str]) -> dict[str, Any]:
    """`["fast", "reliable"]` → `agentlightning.tag.0`, `agentlightning.tag.1`."""
    return flatten({TAG_PREFIX: tags}, expand_leaf_lists=True)


def make_link_attributes(links: dict[str, str]) -> dict[str, Any]:
    """`{"gen_ai.response.id": "r-1"}` → `agentlightning.link.0.key_match` / `.value_match`."""
    pairs = []
    for key, value in links.items():
        if not isinstance(value, str):
            raise ValueError(f"Link value must be a string, got {type(value)} for key '{key}'")
        pairs.append({"key_match": key, "value_match": value})
    return flatten({LINK_PREFIX: pairs}, expand_leaf_lists=True)
