"""The contracts the service knows components by.

A receiver is given the consumer to feed; a processor and an exporter *are* consumers. The
service never looks inside a component: it creates it through its factory, starts it, feeds it,
and shuts it down.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict

from spanpipe.errors import PipelineError
from spanpipe.signals import LOGS
from spanpipe.telemetry import counters

if TYPE_CHECKING:
    from spanpipe.derived import Derivation
    from spanpipe.logbatch import LogBatch
    from spanpipe.spanbatch import SpanBatch


class ComponentConfig(BaseModel):
    """Base of every component's typed config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    def validate_config(self) -> None:
        """Cross-field checks a component needs beyond types; raise ValueError with a message."""

    def extension_refs(self) -> dict[str, str]:
        """Extensions this component uses: {YAML sub-path: extension id} (storage, auth)."""
        return {}


@runtime_checkable
class Authenticator(Protocol):
    """An extension that checks incoming requests and signs outgoing ones (`auth.authenticator`)."""

    def authenticate(self, authorization: str | None) -> bool: ...

    def header(self) -> str: ...


@runtime_checkable
class Storage(Protocol):
    """An extension that gives a component a directory of its own (`sending_queue.storage`)."""

    fsync: bool

    def directory_for(self, component_id: str) -> Path: ...


# What a config key that names an extension needs it to be: the key's last segment → protocol.
CAPABILITIES: dict[str, type] = {"authenticator": Authenticator, "storage": Storage}

C = TypeVar("C")


class Host(Protocol):
    """What a component may ask of the running service (otelcol's component.Host)."""

    def extension(self, extension_id: str) -> Extension: ...

    def extension_as(self, extension_id: str, capability: type[C]) -> C:
        """The extension, checked to provide `capability` (Authenticator, Storage)."""
        ...

    def ready(self) -> bool: ...


def extension_as(extensions: dict[str, Extension], extension_id: str, capability: type[C]) -> C:
    ext = extensions[extension_id]
    if not isinstance(ext, capability):
        raise TypeError(f"extension '{extension_id}' is not a {capability.__name__}")
    return ext  # type: ignore[return-value]


class Component(ABC):
    host: Host

    def __init__(self, component_id: str) -> None:
        self.id = component_id
        self.log = logging.getLogger(f"spanpipe.{component_id}")

    def start(self) -> None:
        """Acquire resources (ports, files, threads). Raise to abort start-up."""

    def shutdown(self) -> None:
        """Release resources after draining what is in flight."""


class Consumer(ABC):
    """Takes a SpanBatch. May raise a PipelineError (see spanpipe.errors) to refuse it."""

    @abstractmethod
    def consume(self, batch: SpanBatch) -> None: ...


class LogsConsumer(ABC):
    """Takes log records (a LogBatch). May raise a PipelineError to refuse them."""

    @abstractmethod
    def consume_logs(self, batch: LogBatch) -> None: ...


@dataclass(frozen=True)
class Consumers:
    """What a receiver feeds, one consumer per signal (None: the receiver is in no pipeline of it)."""

    traces: Consumer | None = None
    logs: LogsConsumer | None = None


class Receiver(Component):
    """Created with its consumers: `next` takes the spans of the receiver's traces pipelines,
    `logs` the records of its logs pipelines (for receivers whose factory lists logs)."""

    def __init__(self, component_id: str, consumers: Consumers) -> None:
        super().__init__(component_id)
        self.next = consumers.traces
        self.logs = consumers.logs


class Processor(Component, Consumer):
    """A processor in a logs pipeline (its factory lists "logs") also implements `consume_logs`."""

    def __init__(self, component_id: str, next_consumer: Consumer) -> None:
        super().__init__(component_id)
        self.next = next_consumer
        # Set while `send_downstream` waits out a retryable refusal: what the processor holds
        # cannot leave, so a processor that buffers (tail_sampling) refuses more meanwhile.
        self.downstream_refusing = False

    def derivation(self) -> Derivation | None:
        """The pure, per-span part of this processor, for the decode workers to compute while
        they decode (ARCHITECTURE.md#decode-workers-both-cores); None when it has none."""
        return None

    def count_in(self, spans: int) -> None:
        counters.add("processor_incoming_items", spans, processor=self.id)

    def count_out(self, spans: int) -> None:
        counters.add("processor_outgoing_items", spans, processor=self.id)

    def forward(self, item: SpanBatch | LogBatch) -> None:
        """Hand spans (a SpanBatch) or log records (a LogBatch) to the next stage."""
        if item.signal == LOGS:
            self.next.consume_logs(item)  # type: ignore[attr-defined]
        else:
            self.next.consume(item)

    def send_downstream(self, batch: SpanBatch | LogBatch) -> None:
        """For processors that send from their own thread (batch, tail_sampling): retry a
        retryable refusal with backoff, so back-pressure builds up here instead of losing data;
        drop (counted, logged) only what downstream refuses for good."""
        delay = 0.05
        what = batch.unit
        try:
            while True:
                try:
                    self.forward(batch)
                    self.count_out(len(batch))
                    return
                except PipelineError as exc:
                    if not exc.retryable:
                        counters.add(f"processor_dropped_{what}", len(batch), processor=self.id)
                        self.log.error("dropping %d %s: downstream refused them for good: %s", len(batch), what, exc)
                        return
                    self.downstream_refusing = True
                    self.log.warning("downstream busy (%s); retrying in %.2fs", exc, delay)
                except Exception:  # noqa: BLE001 - a bug downstream must not kill the sending thread
                    counters.add(f"processor_dropped_{what}", len(batch), processor=self.id)
                    self.log.exception("dropping %d %s after an unexpected downstream error", len(batch), what)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        finally:
            self.downstream_refusing = False


class BatchTransform(Processor):
    """A processor that maps a batch to a batch synchronously (most processors)."""

    @abstractmethod
    def process(self, batch: SpanBatch) -> SpanBatch: ...

    def consume(self, batch: SpanBatch) -> None:
        self.count_in(len(batch))
        out = self.process(batch)
        if len(out):
            self.next.consume(out)
        self.count_out(len(out))


class Exporter(Component, Consumer):
    pass


class Extension(Component):
    pass


class FanOut(Consumer, LogsConsumer):
    """Feeds one batch to several consumers (pipelines of a receiver, exporters of a pipeline).

    Every consumer gets the batch; the first error is raised after all were tried, so one failing
    exporter does not starve the others.
    """

    def __init__(self, consumers: list) -> None:
        self.consumers = consumers

    def _each(self, call: Callable[[object], None]) -> None:
        if len(self.consumers) == 1:
            call(self.consumers[0])
            return
        first: Exception | None = None
        for c in self.consumers:
            try:
                call(c)
            except Exception as exc:  # noqa: BLE001 - re-raised below
                first = first or exc
        if first is not None:
            raise first

    def consume(self, batch: SpanBatch) -> None:
        self._each(lambda c: c.consume(batch))

    def consume_logs(self, batch: LogBatch) -> None:
        self._each(lambda c: c.consume_logs(batch))
