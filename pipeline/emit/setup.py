"""`configure()` / `shutdown()`: one call that points an agent's spans at a collector.

The SDK allows one global tracer provider per process. If the agent already installed one, we add
our span processor to it instead of replacing it; otherwise we install ours. Either way a single
`EmitSpanProcessor` sits on the provider: it tags every starting span with the rollout of the
current context (so spans made by other instrumentations inside `rollout()` are tagged too) and
forwards ended spans to the exporter of the latest `configure()` call.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

ROLLOUT_ID = "agentlightning.rollout_id"
ATTEMPT_ID = "agentlightning.attempt_id"
TASK_ID = "spanpipe.task_id"  # groups rollouts of one task (GRPO); on the rollout span and in baggage
TAGGED_KEYS = (ROLLOUT_ID, ATTEMPT_ID)

DEFAULT_GRPC = "http://127.0.0.1:4317"
DEFAULT_HTTP = "http://127.0.0.1:4318"


class EmitError(RuntimeError):
    """An emit call that can't produce a span (no tracer configured, bad input to the tracer)."""


class EmitSpanProcessor(SpanProcessor):
    def __init__(self) -> None:
        self.exporting: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for key in TAGGED_KEYS:
            value = baggage.get_baggage(key, parent_context)
            if value is not None and key not in (span.attributes or {}):
                span.set_attribute(key, str(value))

    def on_end(self, span: ReadableSpan) -> None:
        if self.exporting is not None:
            self.exporting.on_end(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporting.force_flush(timeout_millis) if self.exporting else True

    def shutdown(self) -> None:
        if self.exporting is not None:
            self.exporting.shutdown()
            self.exporting = None


_lock = threading.Lock()
_provider: TracerProvider | None = None


def _processor_of(provider: TracerProvider) -> EmitSpanProcessor:
    proc = getattr(provider, "_spanpipe_emit_processor", None)
    if proc is None:
        proc = EmitSpanProcessor()
        provider.add_span_processor(proc)
        provider._spanpipe_emit_processor = proc  # type: ignore[attr-defined]
    return proc


def _env(*names: str) -> str | None:
    for n in names:
        if os.environ.get(n):
            return os.environ[n]
    return None


def make_exporter(endpoint: str | None, protocol: str | None, headers: dict[str, str] | None) -> SpanExporter:
    """An OTLP exporter; explicit arguments win over `OTEL_EXPORTER_OTLP_*`, which win over our defaults."""
    protocol = protocol or _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        url = endpoint or _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_GRPC
        insecure = url.startswith("http://") or None
        return GrpcExporter(endpoint=url, insecure=insecure, headers=headers)
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        if endpoint is None and _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            url = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        else:
            base = endpoint or _env("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_HTTP
            url = base if base.rstrip("/").endswith("/v1/traces") else base.rstrip("/") + "/v1/traces"
        return HttpExporter(endpoint=url, headers=headers)
    raise ValueError(f"protocol must be 'grpc' or 'http/protobuf', got {protocol!r}")


def configure(endpoint: str | None = None, protocol: str | None = None, service_name: str | None = None,
              resource: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
              exporter: SpanExporter | None = None, **batch_options: Any) -> TracerProvider:
    """Send this process's spans to a collector. Returns the tracer provider in use.

    `exporter` replaces the OTLP exporter (tests, or another backend); `batch_options` go to the
    SDK's BatchSpanProcessor (`schedule_delay_millis`, `max_export_batch_size`, ...).
    """
    global _provider
    with _lock:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            provider = current
        else:
            attrs = dict(resource or {})
            if service_name:
                attrs[SERVICE_NAME] = service_name
            provider = TracerProvider(resource=Resource.create(attrs))
            trace.set_tracer_provider(provider)
        proc = _processor_of(provider)
        if proc.exporting is not None:
            proc.shutdown()
        proc.exporting = BatchSpanProcessor(exporter or make_exporter(endpoint, protocol, headers), **batch_options)
        _provider = provider
        return provider


def shutdown(timeout_millis: int = 30_000) -> None:
    """Flush what is buffered and stop exporting (the agent's own provider, if any, keeps running)."""
    global _provider
    with _lock:
        if _provider is not None:
            proc = _processor_of(_provider)
            proc.force_flush(timeout_millis)
            proc.shutdown()
            _provider = None


def flush(timeout_millis: int = 30_000) -> bool:
    provider = active_provider()
    return provider.force_flush(timeout_millis) if provider is not None else True


def active_provider() -> TracerProvider | None:
    """The provider emit calls use: ours after `configure()`, else an SDK provider the agent set up."""
    if _provider is not None:
        return _provider
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        _processor_of(current)
        return current
    return None


def tracer() -> trace.Tracer:
    provider = active_provider()
    if provider is None:
        raise EmitError("No tracer configured: call spanpipe.emit.configure(endpoint=...) first "
                        "(or set up an OpenTelemetry SDK TracerProvider), or pass propagate=False "
                        "to build the span without sending it.")
    return provider.get_tracer("spanpipe.emit")
