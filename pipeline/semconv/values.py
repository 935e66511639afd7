"""Attribute values arrive as structured values, JSON strings or Python-repr strings; read all three."""

from __future__ import annotations

import ast
from typing import Any, Iterable

import orjson


def loose(value: Any) -> Any:
    """A str that holds JSON or a Python literal becomes that value; anything else is returned as is."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text or text[0] not in "[{\"'(0123456789-tfnTFN":
        return value
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    if text[0] in "[{('\"":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return value


def int_list(value: Any) -> list[int] | None:
    value = loose(value)
    if isinstance(value, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return list(value)
    return None


def indexed(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """`prefix.0.role`, `prefix.0.content`, `prefix.1.role` → `[{"role", "content"}, {"role"}]`,
    nested keys kept dotted (`tool_calls.0.name`)."""
    dot = prefix + "."
    rows: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(dot):
            continue
        idx, _, rest = key[len(dot):].partition(".")
        if idx.isdigit() and rest:
            rows.setdefault(int(idx), {})[rest] = value
    return [rows[i] for i in sorted(rows)]


def first_present(keys: Iterable[str], *sources: dict[str, Any]) -> Any:
    """The first value that is set (not None, not "") for `keys`, searching `sources` in order."""
    for src in sources:
        for k in keys:
            v = src.get(k)
            if v is not None and v != "":
                return v
    return None
