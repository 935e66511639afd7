"""Attribute actions shared by the `attributes` and `resource` processors (otelcol's attraction).

Actions, applied in config order: `insert` (only if absent), `update` (only if present), `upsert`,
`delete`, `hash` (SHA-256, hex), `extract` (named regex groups of the value become attributes),
`convert` (`converted_type`: int, double, string). `delete` and `hash` take `key` or a key regex
`pattern`; `insert`/`update`/`upsert` take `value` or `from_attribute`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

import orjson

from spanpipe.userregex import compile_regex


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str | None = None
    action: Literal["insert", "update", "upsert", "delete", "hash", "extract", "convert"]
    value: Any = None
    from_attribute: str | None = None
    pattern: str | None = None
    converted_type: Literal["int", "double", "string"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Action:
        a = self.action
        if a in ("insert", "update", "upsert"):
            if not self.key:
                raise ValueError(f"action '{a}' needs 'key'")
            if (self.value is None) == (self.from_attribute is None):
                raise ValueError(f"action '{a}' needs exactly one of 'value' or 'from_attribute'")
        elif a in ("delete", "hash"):
            if not self.key and not self.pattern:
                raise ValueError(f"action '{a}' needs 'key' or 'pattern'")
        elif a == "extract":
            if not self.key or not self.pattern:
                raise ValueError("action 'extract' needs 'key' and 'pattern'")
            if not compile_regex(self.pattern).groupindex:
                raise ValueError("action 'extract': 'pattern' needs named groups, e.g. (?P<name>...)")
        elif a == "convert":
            if not self.key or not self.converted_type:
                raise ValueError("action 'convert' needs 'key' and 'converted_type'")
        if self.pattern is not None:
            compile_regex(self.pattern)
        return self


def _hash(value: Any) -> str:
    data = value if isinstance(value, bytes) else (value if isinstance(value, str) else orjson.dumps(value).decode()).encode()
    return hashlib.sha256(data).hexdigest()


def _convert(value: Any, to: str) -> Any:
    try:
        if to == "string":
            if isinstance(value, bool):
                return "true" if value else "false"
            return value if isinstance(value, str) else orjson.dumps(value).decode()
        if to == "int":
            if isinstance(value, bool):
                return int(value)
            return int(float(value)) if isinstance(value, (str, float)) else int(value)
        if isinstance(value, bool):
            return float(value)
        return float(value)
    except (TypeError, ValueError):
        return value  # as otelcol: a value that cannot be converted is left alone


class Actions:
    """A compiled action list; `apply` returns a new dict (never mutates its input)."""

    def __init__(self, actions: list[Action]) -> None:
        self.actions = actions
        self.patterns = [compile_regex(a.pattern) if a.pattern else None for a in actions]

    def apply(self, attrs: dict[str, Any]) -> dict[str, Any]:
        out = dict(attrs)
        for a, rx in zip(self.actions, self.patterns):
            act, key = a.action, a.key
            if act in ("insert", "update", "upsert"):
                if a.from_attribute is not None:
                    if a.from_attribute not in out:
                        continue
                    value = out[a.from_attribute]
                else:
                    value = a.value
                present = key in out
                if (act == "insert" and not present) or (act == "update" and present) or act == "upsert":
                    out[key] = value
            elif act == "delete":
                for k in [k for k in out if k == key or (rx and rx.search(k))]:
                    del out[k]
            elif act == "hash":
                for k in [k for k in out if k == key or (rx and rx.search(k))]:
                    out[k] = _hash(out[k])
            elif act == "extract":
                value = out.get(key)
                if isinstance(value, str) and rx is not None:
                    m = rx.search(value)
                    if m:
                        out.update({g: v for g, v in m.groupdict().items() if v is not None})
            elif act == "convert":
                if key in out:
                    out[key] = _convert(out[key], a.converted_type)  # type: ignore[arg-type]
        return out
