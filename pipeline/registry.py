"""Factories, one per component type, registered per kind.

Adding a component = one module that defines `factory = Factory(...)` plus one line in
`pipeline/components.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from pipeline.config import ComponentConfig

KINDS = ("receivers", "processors", "exporters", "extensions")


@dataclass(frozen=True)
class Factory:
    type: str
    kind: str
    config_class: type[ComponentConfig]
    # receivers/processors: create(id, config, next_consumer); exporters/extensions: create(id, config)
    create: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    signals: tuple[str, ...] = ("traces",)  # the pipelines (otelcol signals) it can be in


class Registry:
    def __init__(self, factories: list[Factory]) -> None:
        self._by_kind: dict[str, dict[str, Factory]] = {k: {} for k in KINDS}
        for f in factories:
            for name in (f.type, *f.aliases):
                self._by_kind[f.kind][name] = f

    def get(self, kind: str, type_name: str) -> Factory | None:
        return self._by_kind[kind].get(type_name)

    def types(self, kind: str) -> list[str]:
        return list(self._by_kind[kind])


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    from pipeline.components import FACTORIES

    return Registry(FACTORIES)
