"""The `otlp` receiver: OTLP traces and logs over gRPC and HTTP, configured as in otelcol.

```yaml
receivers:
  otlp:
    protocols:
      grpc: {endpoint: 127.0.0.1:4317, max_recv_msg_size_mib: 4}
      http: {endpoint: 127.0.0.1:4318, max_request_body_size: 20971520}
```
Both protocols decode each request once (spans into a SpanBatch, log records into an Arrow
table) and hand it to the receiver's pipelines of that signal. Span requests are decoded in
`decode_workers` worker processes (`auto`: one per core beyond the first; 0: in the receiving
thread), so that decoding is not bound to the collector's one GIL; a signal the receiver is in no
pipeline of is not served (gRPC UNIMPLEMENTED, HTTP 404), as in otelcol. Each may
take `tls: {cert_file, key_file, client_ca_file}` and `auth: {authenticator: bearertokenauth}`
(a request without the token is answered UNAUTHENTICATED / 401 and counted as refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spanpipe.logbatch import LogBatch
from spanpipe import derived, events
from spanpipe.extensions.bearertokenauth import AuthSettings
from spanpipe.component import Authenticator, ComponentConfig, Consumers, Receiver
from spanpipe.configtypes import Endpoint
from spanpipe.decodepool import DecodePool, workers_for
from spanpipe.errors import PipelineError
from spanpipe.otlp import DecodedTraces, decode_traces_json, traces_response
from spanpipe.otlp_columns import decode_traces
from spanpipe.otlp_logs import DecodedLogs, decode_logs_json, decode_logs_protobuf, logs_response
from spanpipe.registry import Factory
from spanpipe.telemetry import counters
from spanpipe.tlsconfig import ServerTLS


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tls: ServerTLS | None = None
    auth: AuthSettings | None = None
    include_metadata: bool = False


def client_metadata(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """Request metadata / headers as the batch processor's metadata_keys read them. The
    Authorization value is left out: batches may be written to a persistent queue."""
    out: dict[str, tuple[str, ...]] = {}
    for key, value in pairs:
        key = key.lower()
        if key != "authorization" and isinstance(value, str):
            out[key] = (*out.get(key, ()), value)
    return out


class GrpcProtocol(ServerSettings):
    endpoint: Endpoint = "127.0.0.1:4317"
    max_recv_msg_size_mib: float = Field(4, gt=0)
    max_concurrent_streams: int = Field(0, ge=0)
    workers: int = Field(8, ge=1, le=256, description="handler threads")


class HttpProtocol(ServerSettings):
    endpoint: Endpoint = "127.0.0.1:4318"
    max_request_body_size: int = Field(20 * 1024 * 1024, gt=0)
    traces_url_path: str = "/v1/traces"
    logs_url_path: str = "/v1/logs"
    workers: int = Field(4, ge=1, le=256, description="decode threads")


class Protocols(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grpc: GrpcProtocol | None = None
    http: HttpProtocol | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_defaults(cls, data: Any) -> Any:
        # `grpc:` with nothing under it enables the protocol with its defaults, as in otelcol.
        if isinstance(data, dict):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data


class OtlpReceiverConfig(ComponentConfig):
    protocols: Protocols = Field(default_factory=Protocols)
    decode_workers: Annotated[int, Field(ge=0, le=64)] | Literal["auto"] = Field(
        "auto", description="processes decoding span requests; auto: one per core beyond the first; 0: none")

    def validate_config(self) -> None:
        if self.protocols.grpc is None and self.protocols.http is None:
            raise ValueError("protocols: enable at least one of grpc, http")

    def extension_refs(self) -> dict[str, str]:
        return {f"protocols::{name}::auth::authenticator": proto.auth.authenticator
                for name, proto in (("grpc", self.protocols.grpc), ("http", self.protocols.http))
                if proto is not None and proto.auth is not None}


@dataclass(frozen=True)
class Signal:
    """How one OTLP signal is served: its gRPC service, HTTP path setting, codecs, counters."""

    name: str
    grpc_service: str
    url_path_setting: str
    items: str  # what otelcol's receiver counters count: spans, log_records
    decode_protobuf: Callable[[bytes], Any]
    decode_json: Callable[[bytes], Any]
    response: Callable[[Any], Any]


TRACES = Signal("traces", "opentelemetry.proto.collector.trace.v1.TraceService", "traces_url_path", "spans",
                decode_traces, decode_traces_json, traces_response)
LOGS = Signal("logs", "opentelemetry.proto.collector.logs.v1.LogsService", "logs_url_path", "log_records",
              decode_logs_protobuf, decode_logs_json, logs_response)


class OtlpReceiver(Receiver):
    def __init__(self, component_id: str, config: OtlpReceiverConfig, consumers: Consumers) -> None:
        super().__init__(component_id, consumers)
        self.config = config
        self.servers: list[Any] = []
        self.decode_pool: DecodePool | None = None

    def authenticator(self, settings: ServerSettings) -> Callable[[str | None], bool] | None:
        """The check a protocol server applies to each request's Authorization value, if any."""
        if settings.auth is None:
            return None
        return self.host.extension_as(settings.auth.authenticator, Authenticator).authenticate

    def count_refused_request(self, reason: str) -> None:
        """A request refused before decoding (memory_limit, unauthenticated): its spans are unknown."""
        counters.add("receiver_refused_requests", 1, receiver=self.id, reason=reason)

    def signals(self) -> list[Signal]:
        """The signals this receiver serves: those of the pipelines it is in."""
        return [sig for sig, consumer in ((TRACES, self.next), (LOGS, self.logs)) if consumer is not None]

    def decode(self, signal: Signal, body: bytes, json: bool = False) -> DecodedTraces | DecodedLogs:
        """One request decoded: span requests by the decode workers when there are any."""
        if signal is TRACES and self.decode_pool is not None:
            return self.decode_pool.decode(body, json)
        return (signal.decode_json if json else signal.decode_protobuf)(body)

    def deliver(self, signal: Signal, decoded: DecodedTraces | DecodedLogs,
                metadata: dict[str, tuple[str, ...]]) -> None:
        """Hand a decoded request to the pipelines; counts accepted/refused like otelcol."""
        n = len(decoded)
        if decoded.rejected:
            counters.add(f"receiver_refused_{signal.items}", decoded.rejected, receiver=self.id)
        if not n:
            return
        try:
            if signal is TRACES:
                decoded.batch.client_metadata = metadata  # type: ignore[union-attr]
                self.next.consume(decoded.batch)  # type: ignore[union-attr]
            else:
                self.logs.consume_logs(LogBatch(decoded.table))  # type: ignore[union-attr]
        except PipelineError as exc:
            counters.add(f"receiver_refused_{signal.items}", n, receiver=self.id)
            if signal is TRACES:
                events.publish(events.SPANS_REFUSED, receiver=self.id, spans=n, error=type(exc).__name__,
                               message=str(exc))
            raise
        counters.add(f"receiver_accepted_{signal.items}", n, receiver=self.id)

    def start(self) -> None:
        from spanpipe.receivers.otlp_grpc import OtlpGrpcServer
        from spanpipe.receivers.otlp_http import OtlpHttpServer

        protocols = self.config.protocols
        workers = workers_for(self.config.decode_workers)
        if workers and self.next is not None:
            derivations = derived.downstream(self.next)
            self.decode_pool = DecodePool(workers, self.id, derivations)
            self.log.info("decoding span requests in %d worker process(es)%s", workers,
                          f" that also compute {', '.join(sorted(d.name for d in derivations))}"
                          if derivations else "")
        try:
            if protocols.grpc is not None:
                self.servers.append(OtlpGrpcServer(self, protocols.grpc))
                self.servers[-1].start()
            if protocols.http is not None:
                self.servers.append(OtlpHttpServer(self, protocols.http))
                self.servers[-1].start()
        except Exception:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
        if self.decode_pool is not None:
            self.decode_pool.close()
            self.decode_pool = None


_create = lambda cid, cfg, nxt: OtlpReceiver(cid, cfg, nxt)
factory = Factory("otlp", "receivers", OtlpReceiverConfig, traces=_create, logs=_create)
