"""Factories, one per component type, registered per kind, found through Python entry points.

A component package declares, in its `pyproject.toml`, one entry point per component in the
group of its kind — `spanpipe.receivers`, `spanpipe.processors`, `spanpipe.exporters`,
`spanpipe.extensions` — named after the component type, pointing at its `Factory`. The built-in
components are registered the same way. Only the CLI (and tests) build a registry; the rest of
the core takes the one it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from spanpipe.component import ComponentConfig

KINDS = ("receivers", "processors", "exporters", "extensions")
SIGNALS = ("traces", "logs")
ENTRY_POINT_GROUP = "spanpipe.{kind}"


@dataclass(frozen=True)
class Factory:
    """A component type: its typed config and how to create it, per signal.

    Like otelcol's `WithTraces` / `WithLogs`, a factory gives a creator per signal it supports —
    `traces=`, `logs=` — and its `signals` derive from them. Receivers and processors are created
    as `creator(id, config, next)` (a receiver's `next` is its `Consumers`), exporters and
    extensions as `creator(id, config)`. A processor is one instance per pipeline, made by the
    creator of that pipeline's signal; a receiver or an exporter is one instance per id serving
    all its signals (one OTLP port, one warehouse), so its creators must be the same function.
    `create=` with `signals=` is the older spelling of one creator for the signals listed."""

    type: str
    kind: str
    config_class: type[ComponentConfig]
    create: Callable[..., Any] | None = None
    aliases: tuple[str, ...] = ()
    signals: tuple[str, ...] = ("traces",)  # derived from the creators when they are given
    capabilities: tuple[str, ...] = ()  # extensions: what they can be used as ("authenticator", "storage")
    # processors: the batch columns they add, each a promoted column of the warehouse schema
    # (`columns.SPANS`) or a batch-only one (`columns.BATCH_ONLY`); the component test holds them to it
    adds_columns: tuple[str, ...] = ()
    traces: Callable[..., Any] | None = None
    logs: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        given = tuple(s for s in SIGNALS if getattr(self, s) is not None)
        if given:
            object.__setattr__(self, "signals", given)
            if self.create is None:
                object.__setattr__(self, "create", getattr(self, given[0]))
        elif self.create is None:
            raise TypeError(f"factory '{self.type}' has no creator: give traces=, logs= or create=")

    def creator(self, signal: str) -> Callable[..., Any]:
        """How to create this component for a pipeline of `signal` (one it supports)."""
        if signal not in self.signals:
            raise KeyError(f"{self.kind} '{self.type}' does not take {signal}")
        return getattr(self, signal) or self.create


class RegistryError(Exception):
    pass


class Registry:
    """The factories of each kind by type name. Built from entry points, a factory's module is
    imported the first time its type is asked for: a collector imports the components its YAML
    names, not every one installed (each costs start-up time in every process that runs one)."""

    def __init__(self, factories: list[Factory], origins: dict[int, str] | None = None) -> None:
        """`origins`: id(factory) → the distribution that provides it, for error messages."""
        self._by_kind: dict[str, dict[str, Factory]] = {k: {} for k in KINDS}
        self._unloaded: dict[str, dict[str, EntryPoint]] = {k: {} for k in KINDS}
        self._origins: dict[int, str | EntryPoint] = dict(origins or {})
        for f in factories:
            self._add(f)

    def _add(self, f: Factory) -> None:
        if f.kind not in self._by_kind:
            raise RegistryError(f"factory '{f.type}' has unknown kind '{f.kind}' (one of {', '.join(KINDS)})")
        _check_columns(f, self._origin(f))
        _check_shared(f, self._origin(f))
        for name in (f.type, *f.aliases):
            other = self._by_kind[f.kind].get(name)
            if other is not None and other is not f:
                raise _two_named(f.kind, name, self._origin(other), self._origin(f))
            self._by_kind[f.kind][name] = f

    def _origin(self, f: Factory) -> str:
        """Where `f` comes from, for an error message (reading a distribution's name parses its
        metadata: done only here)."""
        origin = self._origins.get(id(f), "an unknown package")
        return origin if isinstance(origin, str) else _package(origin)

    def get(self, kind: str, type_name: str) -> Factory | None:
        found = self._by_kind[kind].get(type_name)
        if found is None and type_name in self._unloaded[kind]:
            self._load(kind, type_name)
            found = self._by_kind[kind].get(type_name)
        if found is None and self._unloaded[kind]:
            self._load_all(kind)  # an alias is known only once its factory is loaded
            found = self._by_kind[kind].get(type_name)
        return found

    def types(self, kind: str) -> list[str]:
        self._load_all(kind)
        return list(self._by_kind[kind])

    def factories(self) -> list[Factory]:
        """Every factory once (aliases not repeated)."""
        seen: dict[int, Factory] = {}
        for kind in KINDS:
            self._load_all(kind)
            for f in self._by_kind[kind].values():
                seen.setdefault(id(f), f)
        return list(seen.values())

    def _load(self, kind: str, name: str) -> None:
        ep = self._unloaded[kind].pop(name)
        factory = _load(ep, kind)
        self._origins[id(factory)] = ep
        self._add(factory)

    def _load_all(self, kind: str) -> None:
        for name in list(self._unloaded[kind]):
            self._load(kind, name)

    @classmethod
    def from_entry_points(cls) -> Registry:
        """Every component installed in this environment. Two packages giving one type name is an
        error here, before anything is imported."""
        registry = cls([])
        installed = entry_points()  # one scan of the installed distributions (~15 ms here), not one per kind
        for kind in KINDS:
            for ep in installed.select(group=ENTRY_POINT_GROUP.format(kind=kind)):
                other = registry._unloaded[kind].get(ep.name)
                if other is not None and other.value != ep.value:
                    raise _two_named(kind, ep.name, _package(other), _package(ep))
                registry._unloaded[kind][ep.name] = ep
        return registry


def _package(ep: EntryPoint) -> str:
    return f"package '{ep.dist.name if ep.dist else '?'}' ({ep.value})"


def _two_named(kind: str, name: str, one: str, other: str) -> RegistryError:
    return RegistryError(f"two {kind} are named '{name}': one from {one}, one from {other}; uninstall one of them")


def _check_columns(f: Factory, origin: str) -> None:
    from spanpipe import columns

    if f.adds_columns and f.kind != "processors":
        raise RegistryError(f"{f.kind} '{f.type}' from {origin} declares columns it adds; only processors add columns")
    known = set(columns.promoted()) | set(columns.BATCH_ONLY)
    unknown = [c for c in f.adds_columns if c not in known]
    if unknown:
        raise RegistryError(f"processor '{f.type}' from {origin} declares columns the warehouse schema does not "
                            f"have: {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _check_shared(f: Factory, origin: str) -> None:
    if f.kind in ("receivers", "exporters") and len({id(f.creator(s)) for s in f.signals}) > 1:
        raise RegistryError(f"{f.kind[:-1]} '{f.type}' from {origin} gives a different creator per signal; a "
                            f"{f.kind[:-1]} is one instance serving all its signals, so give one creator")


def _load(ep: EntryPoint, kind: str) -> Factory:
    def where() -> str:
        return f"entry point '{ep.name}' = '{ep.value}' in group '{ep.group}' ({_package(ep)})"

    try:
        factory = ep.load()
    except Exception as exc:  # noqa: BLE001 - a broken plug-in must say which one
        raise RegistryError(f"cannot load {where()}: {type(exc).__name__}: {exc}") from None
    if not isinstance(factory, Factory):
        raise RegistryError(f"{where()} is not a spanpipe Factory (got {type(factory).__name__})")
    if factory.kind != kind or factory.type != ep.name:
        raise RegistryError(f"{where()} names a {factory.kind} factory of type '{factory.type}'; "
                            f"the entry point must be named after the type, in the group of its kind")
    return factory
