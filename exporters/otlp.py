"""The `otlp` exporter (alias `otlp_grpc`): forward spans (and, in a logs pipeline, log records) to
any OTLP/gRPC backend.

```yaml
exporters:
  otlp:
    endpoint: collector.example:4317     # https:// → TLS, http:// → plaintext
    tls: {insecure: false, ca_file: ca.crt, cert_file: c.crt, key_file: c.key}
    headers: {x-tenant: rl-team}
    compression: gzip                    # gzip (default) | none
    max_request_size_mib: 4              # larger requests are sent in parts (otelcol's default
                                         # receiver limit: max_recv_msg_size_mib 4)
    auth: {authenticator: bearertokenauth}
    # + timeout, sending_queue, retry_on_failure (the exporter helper)
```
Error handling as in otelcol: CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retried (honouring a server's RetryInfo); every other
code is permanent. (otelcol retries RESOURCE_EXHAUSTED only with RetryInfo; a collector under
memory pressure sends none, and we would rather wait than drop.) A partial success is logged and
its rejected spans counted as failed, not retried. Log records go through a sending queue of
their own (spanpipe.exporterhelper.exporter). A request is never sent larger than `max_request_size_mib`
(uncompressed, the size a receiver limits): a larger one (a backlog merged by the sending queue)
is sent in as many parts as fit. One the backend refuses for its size (RESOURCE_EXHAUSTED
"larger than max", HTTP 413) is sent in halves, never retried unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from pydantic import Field

from spanpipe.logbatch import LogBatch
from spanpipe.extensions.bearertokenauth import AuthSettings
from spanpipe.component import Authenticator
from spanpipe.errors import PermanentError, RequestTooLargeError, TransientError
from spanpipe.exporterhelper import ExporterHelperConfig, QueuedExporter
from spanpipe.otlp_encode import logs_to_request, to_request
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters
from spanpipe.tlsconfig import ClientTLS

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
EXPORT_LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
RETRYABLE = {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.ABORTED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE,
             grpc.StatusCode.DATA_LOSS}


class OtlpClientConfig(ExporterHelperConfig):
    """What the gRPC and HTTP OTLP exporters share."""

    endpoint: str
    headers: dict[str, str] = Field(default_factory=dict)
    compression: str = "gzip"
    tls: ClientTLS = Field(default_factory=ClientTLS)
    auth: AuthSettings | None = None
    max_request_size_mib: float = Field(4, gt=0)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_size_mib * 1024 * 1024)

    def validate_config(self) -> None:
        if not self.endpoint:
            raise ValueError("endpoint: required")
        if self.compression not in ("gzip", "none", ""):
            raise ValueError(f"compression: use gzip or none, got '{self.compression}'")

    def extension_refs(self) -> dict[str, str]:
        refs = super().extension_refs()
        if self.auth:
            refs["auth::authenticator"] = self.auth.authenticator
        return refs


class OtlpGrpcExporterConfig(OtlpClientConfig):
    def validate_config(self) -> None:
        super().validate_config()
        target = self.endpoint.split("://", 1)[-1]
        if ":" not in target:
            raise ValueError(f"endpoint: expected host:port, got '{self.endpoint}'")


class PartialSuccess(Exception):
    pass


class OtlpClientExporter(QueuedExporter):
    """Shared by the gRPC and HTTP exporters: headers (with the auth token) and partial success."""

    config: OtlpClientConfig

    def request_headers(self) -> dict[str, str]:
        headers = {k.lower(): v for k, v in self.config.headers.items()}
        if self.config.auth:
            headers["authorization"] = self.host.extension_as(self.config.auth.authenticator, Authenticator).header()
        return headers

    def check_size(self, size: int, items: int) -> None:
        """Refuse to send a request larger than the backend takes: the helper sends it in as many
        parts as should each fit (with a margin for items of uneven sizes), each encoded once more,
        rather than halving and re-encoding the whole backlog at every level."""
        limit = self.config.max_request_bytes
        if size > limit and items > 1:
            raise RequestTooLargeError(f"{self.id}: a request of {items} items is {size} bytes, over "
                                       f"max_request_size_mib ({self.config.max_request_size_mib})",
                                       parts=math.ceil(size / (0.8 * limit)))

    def check_partial_success(self, response: ExportTraceServiceResponse | ExportLogsServiceResponse,
                              sent: int) -> None:
        partial = response.partial_success
        logs = isinstance(response, ExportLogsServiceResponse)
        rejected = partial.rejected_log_records if logs else partial.rejected_spans
        what = "log_records" if logs else "spans"
        if rejected or partial.error_message:
            counters.add(f"exporter_send_failed_{what}", rejected, exporter=self.id)
            self.log.warning("backend accepted %d of %d %s: %s", sent - rejected, sent, what.replace("_", " "),
                             partial.error_message or "no reason given")


def _retry_delay(error: grpc.RpcError) -> float | None:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


class OtlpGrpcExporter(OtlpClientExporter):
    config: OtlpGrpcExporterConfig

    def __init__(self, component_id: str, config: OtlpGrpcExporterConfig) -> None:
        super().__init__(component_id, config)
        self._channel: grpc.Channel | None = None
        self._export: Any = None
        self._export_logs: Any = None

    def open(self) -> None:
        cfg = self.config
        scheme, _, target = cfg.endpoint.rpartition("://")
        insecure = cfg.tls.insecure if scheme == "" else scheme == "http"
        options: list[tuple[str, Any]] = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if cfg.tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", cfg.tls.server_name_override))
        compression = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
        if insecure:
            self._channel = grpc.insecure_channel(target, options=options, compression=compression)
        else:
            self._channel = grpc.secure_channel(target, cfg.tls.grpc_credentials(), options=options,
                                                compression=compression)
        self._export = self._channel.unary_unary(EXPORT_METHOD, request_serializer=lambda r: r.SerializeToString(),
                                                 response_deserializer=ExportTraceServiceResponse.FromString)
        self._export_logs = self._channel.unary_unary(
            EXPORT_LOGS_METHOD, request_serializer=lambda r: r.SerializeToString(),
            response_deserializer=ExportLogsServiceResponse.FromString)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def send(self, batch: SpanBatch, timeout: float) -> None:
        self._call(self._export, to_request(batch), len(batch), timeout)

    def send_logs(self, batch: LogBatch, timeout: float) -> None:
        self._call(self._export_logs, logs_to_request(batch.table), len(batch), timeout)

    def _call(self, export: Any, request: Any, items: int, timeout: float) -> None:
        self.check_size(request.ByteSize(), items)
        try:
            response = export(request, timeout=timeout or None, metadata=tuple(self.request_headers().items()))
        except grpc.RpcError as exc:
            code, detail = exc.code(), exc.details()  # type: ignore[attr-defined]
            message = f"{self.id}: {self.config.endpoint} answered {code.name}: {detail}"
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (detail or ""):
                raise RequestTooLargeError(message) from None
            if code in RETRYABLE:
                error = TransientError(message)
                error.retry_after = _retry_delay(exc)
                raise error from None
            raise PermanentError(message) from None
        self.check_partial_success(response, items)


_create = lambda cid, cfg: OtlpGrpcExporter(cid, cfg)
factory = Factory("otlp", "exporters", OtlpGrpcExporterConfig, aliases=("otlp_grpc",), traces=_create, logs=_create)
