"""Per-span derivations: the pure, per-span part of a processor, done where a request is decoded.

A processor whose result for a span depends on that span alone (the reward processor's reading,
the rollout processor's id lookup) offers that part as a `Derivation`. The OTLP receiver's decode
workers compute the derivations of every processor downstream of it while they decode, and the
batch carries the results (`SpanBatch.derived`) bound to the very column objects they were
computed from. A processor uses a result only while the batch still holds those columns: one
upstream that replaced attributes, names or events, or dropped spans, makes it compute again, so
a result is never stale, only sometimes unused.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spanpipe.spanbatch import SpanBatch

# The columns a derivation may read; a result is valid while the batch holds these very objects.
INPUTS = ("attributes", "name", "events", "resources", "resource_index")


class Derivation(ABC):
    """Picklable (it travels to the decode workers); `name` says what it computes, `key` names the
    computation and its settings: two derivations with one key give the same result for the same
    batch."""

    name: str
    key: str

    @abstractmethod
    def derive(self, batch: SpanBatch) -> Any:
        """The result for every span of `batch`; must not change the batch."""

    def of(self, batch: SpanBatch) -> Any:
        """The result for `batch`: the one a decode worker computed, while valid, else computed now."""
        carried = derived_value(batch, self.key)
        return carried if carried is not None else self.derive(batch)


@dataclass(slots=True)
class Derived:
    value: Any
    inputs: tuple[Any, ...]


def bind(batch: SpanBatch, values: dict[str, Any]) -> None:
    """Attach derivation results computed over `batch`'s current columns."""
    inputs = tuple(getattr(batch, c) for c in INPUTS)
    batch.derived = {key: Derived(value, inputs) for key, value in values.items()}


def derived_value(batch: SpanBatch, key: str) -> Any | None:
    """The result of derivation `key` for this batch, or None when there is none or the batch no
    longer holds the columns it was computed from."""
    found = batch.derived.get(key) if batch.derived else None
    if found is None:
        return None
    if all(getattr(batch, c) is ref for c, ref in zip(INPUTS, found.inputs)):
        return found.value
    return None


def downstream(consumer: Any) -> list[Derivation]:
    """The derivations offered by the processors a receiver's batches go through (all pipelines),
    one per key."""
    from spanpipe.component import FanOut, Processor

    found: dict[str, Derivation] = {}
    todo = [consumer]
    while todo:
        c = todo.pop()
        if isinstance(c, FanOut):
            todo.extend(c.consumers)
        elif isinstance(c, Processor):
            d = c.derivation()
            if d is not None:
                found.setdefault(d.key, d)
            todo.append(c.next)
    return list(found.values())
