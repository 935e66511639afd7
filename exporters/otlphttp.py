"""The `otlphttp` exporter (alias `otlp_http`): forward spans (and log records, in a logs pipeline)
as OTLP/HTTP.

```yaml
exporters:
  otlphttp:
    endpoint: http://collector.example:4318    # POSTs to <endpoint>/v1/traces
    traces_endpoint: https://x/otel/v1/traces  # optional, used as is
    logs_endpoint: https://x/otel/v1/logs      # optional; default <endpoint>/v1/logs
    encoding: proto                            # proto | json
    headers: {x-api-key: "..."}
    compression: gzip
    tls: {ca_file: ca.crt}
    # + timeout, sending_queue, retry_on_failure, auth
```
As in otelcol: 429, 502, 503 and 504 are retried (honouring Retry-After), connection errors too;
every other status is permanent.
"""

from __future__ import annotations

import gzip
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone

import orjson
import urllib3
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from spanpipe.logbatch import LogBatch
from spanpipe.exporters.otlp import OtlpClientConfig, OtlpClientExporter
from spanpipe.errors import PermanentError, RequestTooLargeError, TransientError
from spanpipe.otlp_encode import logs_to_otlp_json, logs_to_request, to_otlp_json, to_request
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch

RETRYABLE_STATUS = {429, 502, 503, 504}


class OtlpHttpExporterConfig(OtlpClientConfig):
    traces_endpoint: str | None = None
    logs_endpoint: str | None = None
    encoding: str = "proto"

    def validate_config(self) -> None:
        super().validate_config()
        for key in ("endpoint", "traces_endpoint", "logs_endpoint"):
            url = getattr(self, key)
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"{key}: expected an http:// or https:// URL, got '{url}'")
        if self.encoding not in ("proto", "json"):
            raise ValueError(f"encoding: use proto or json, got '{self.encoding}'")

    @property
    def url(self) -> str:
        return self.traces_endpoint or self.endpoint.rstrip("/") + "/v1/traces"

    @property
    def logs_url(self) -> str:
        return self.logs_endpoint or self.endpoint.rstrip("/") + "/v1/logs"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max((parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


class OtlpHttpExporter(OtlpClientExporter):
    config: OtlpHttpExporterConfig

    def __init__(self, component_id: str, config: OtlpHttpExporterConfig) -> None:
        super().__init__(component_id, config)
        self._pool: urllib3.PoolManager | None = None

    def open(self) -> None:
        cfg = self.config
        kwargs = {}
        if cfg.url.startswith("https://"):
            kwargs["ssl_context"] = cfg.tls.ssl_context()
            if cfg.tls.server_name_override:
                kwargs["server_hostname"] = cfg.tls.server_name_override
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=cfg.sending_queue.num_consumers, retries=False,
                                         **kwargs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()
            self._pool = None

    def send(self, batch: SpanBatch, timeout: float) -> None:
        if self.config.encoding == "json":
            body = orjson.dumps(to_otlp_json(batch))
        else:
            body = to_request(batch).SerializeToString()
        self.check_size(len(body), len(batch))
        self._post(self.config.url, body, len(batch), timeout, ExportTraceServiceResponse)

    def send_logs(self, batch: LogBatch, timeout: float) -> None:
        table = batch.table
        if self.config.encoding == "json":
            body = orjson.dumps(logs_to_otlp_json(table))
        else:
            body = logs_to_request(table).SerializeToString()
        self.check_size(len(body), table.num_rows)
        self._post(self.config.logs_url, body, table.num_rows, timeout, ExportLogsServiceResponse)

    def _post(self, url: str, body: bytes, items: int, timeout: float, response_class: type) -> None:
        assert self._pool is not None, "exporter not started"
        ctype = "application/json" if self.config.encoding == "json" else "application/x-protobuf"
        headers = {**self.request_headers(), "content-type": ctype}
        if self.config.compression == "gzip":
            body = gzip.compress(body, compresslevel=5)
            headers["content-encoding"] = "gzip"
        try:
            resp = self._pool.request("POST", url, body=body, headers=headers,
                                      timeout=urllib3.Timeout(total=timeout or None))
        except urllib3.exceptions.HTTPError as exc:
            raise TransientError(f"{self.id}: cannot reach {url}: {exc}") from None
        if resp.status == 200:
            self._partial_success(resp.data, ctype, items, response_class)
            return
        message = f"{self.id}: {url} answered HTTP {resp.status}: {resp.data[:200].decode(errors='replace')}"
        if resp.status == 413:
            raise RequestTooLargeError(message)
        if resp.status in RETRYABLE_STATUS:
            error = TransientError(message)
            error.retry_after = _retry_after(resp.headers.get("Retry-After"))
            raise error
        raise PermanentError(message)

    def _partial_success(self, data: bytes, ctype: str, sent: int, response_class: type) -> None:
        if not data:
            return
        response = response_class()
        try:
            if ctype == "application/json":
                json_format.Parse(data, response, ignore_unknown_fields=True)
            else:
                response.ParseFromString(data)
        except Exception:  # noqa: BLE001 - a 200 with an odd body still delivered the spans
            return
        self.check_partial_success(response, sent)


_create = lambda cid, cfg: OtlpHttpExporter(cid, cfg)
factory = Factory("otlphttp", "exporters", OtlpHttpExporterConfig, aliases=("otlp_http",), traces=_create, logs=_create)
