"""A component test kit: an in-process host and sinks for both signals, so a component can be
created, started, fed and shut down without a collector process."""

from __future__ import annotations

import os
import threading
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from spanpipe.component import Component, Consumer, Consumers, Extension, LogsConsumer, extension_as
from spanpipe.logbatch import LogBatch
from spanpipe.otlp import decode_traces
from spanpipe.otlp_logs import decode_logs
from spanpipe.registry import Factory, Registry
from spanpipe.spanbatch import SpanBatch
from otlp_requests import make_request


class Host:
    """What the service gives a component: its extensions, and readiness."""

    def __init__(self, extensions: dict[str, Extension] | None = None) -> None:
        self.extensions = extensions or {}

    def extension(self, extension_id: str) -> Extension:
        return self.extensions[extension_id]

    def extension_as(self, extension_id: str, capability: type) -> Any:
        return extension_as(self.extensions, extension_id, capability)

    def ready(self) -> bool:
        return True


class Sink(Consumer, LogsConsumer):
    """Keeps what it is given: span ids, and log-record counts."""

    def __init__(self) -> None:
        self.span_ids: list[tuple[str, str]] = []
        self.columns: set[str] = set()  # the batch columns beyond the core ones that reached it
        self.log_records = 0
        self._lock = threading.Lock()

    def consume(self, batch: SpanBatch) -> None:
        with self._lock:
            self.span_ids.extend(zip(batch.trace_id, batch.span_id))
            self.columns.update(batch.extra)

    def consume_logs(self, batch: LogBatch) -> None:
        with self._lock:
            self.log_records += len(batch)


def spans(n: int = 5) -> tuple[SpanBatch, list[tuple[str, str]]]:
    req, ids = make_request(n)
    return decode_traces(req).batch, ids


def log_request(n: int = 3) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    for i in range(n):
        rec = records.add()
        rec.time_unix_nano = 1_700_000_000_000_000_000 + i
        rec.trace_id, rec.span_id = os.urandom(16), os.urandom(8)
        rec.severity_number = 9
        rec.body.string_value = f"record {i}"
    return req


def log_records(n: int = 3) -> LogBatch:
    return LogBatch(decode_logs(log_request(n)).table)


def create(factory: Factory, config: Any, next_consumer: Consumer | None = None,
           host: Host | None = None) -> Component:
    cid = factory.type
    if factory.kind == "receivers":
        consumers = Consumers(**{signal: next_consumer for signal in factory.signals})
        component = factory.create(cid, config, consumers)
    elif factory.kind == "processors":
        component = factory.create(cid, config, next_consumer)
    else:
        component = factory.create(cid, config)
    component.host = host or Host()  # type: ignore[assignment]
    return component


def registry() -> Registry:
    return Registry.from_entry_points()
