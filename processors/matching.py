"""`include` / `exclude` span matching, as in otelcol's attributes processor.

```yaml
include:
  match_type: strict        # or regexp
  span_names: ["openai.*"]
  services: [agent]
  span_kinds: [SPAN_KIND_CLIENT]
  attributes: [{key: gen_ai.system, value: openai}]   # value omitted = key present
  resources: [{key: deployment.environment, value: prod}]
```
A span matches when every property given matches (names/services/kinds: any of the list).
"""

from __future__ import annotations

import functools

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from spanpipe.spanbatch import KIND_NAMES
from spanpipe.userregex import compile_regex


class KeyValue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    value: Any = None


class MatchProperties(BaseModel):
    model_config = ConfigDict(extra="forbid")
    match_type: Literal["strict", "regexp"] = "strict"
    span_names: list[str] = []
    services: list[str] = []
    span_kinds: list[str] = []
    attributes: list[KeyValue] = []
    resources: list[KeyValue] = []


class Matcher:
    def __init__(self, props: MatchProperties) -> None:
        self.p = props
        regexp = props.match_type == "regexp"
        compile_ = compile_regex if regexp else None
        self.names = [compile_(n) for n in props.span_names] if regexp else set(props.span_names)
        self.services = [compile_(n) for n in props.services] if regexp else set(props.services)
        self.kinds = {KIND_NAMES.index(k.removeprefix("SPAN_KIND_")) for k in props.span_kinds}

    @functools.lru_cache(maxsize=256)
    def _value_regex(self, pattern: str) -> Any:
        return compile_regex(pattern)

    def _in(self, value: Any, accepted: Any) -> bool:
        if isinstance(accepted, set):
            return value in accepted
        return isinstance(value, str) and any(r.fullmatch(value) for r in accepted)

    def _kv(self, attrs: dict[str, Any], wanted: list[KeyValue]) -> bool:
        for kv in wanted:
            if kv.key not in attrs:
                return False
            if kv.value is None:
                continue
            v = attrs[kv.key]
            if self.p.match_type == "regexp":
                if not (isinstance(v, str) and self._value_regex(str(kv.value)).fullmatch(v)):
                    return False
            elif v != kv.value:
                return False
        return True

    def matches(self, name: str, kind: int, service: str | None, attrs: dict[str, Any],
                resource: dict[str, Any]) -> bool:
        p = self.p
        return ((not p.span_names or self._in(name, self.names))
                and (not p.services or self._in(service, self.services))
                and (not p.span_kinds or kind in self.kinds)
                and (not p.attributes or self._kv(attrs, p.attributes))
                and (not p.resources or self._kv(resource, p.resources)))


def validate_kinds(props: MatchProperties | None, where: str) -> None:
    for k in (props.span_kinds if props else []):
        if k.removeprefix("SPAN_KIND_") not in KIND_NAMES:
            raise ValueError(f"{where}::span_kinds: unknown kind '{k}'")
