"""The collector's own telemetry, configured under `service::telemetry` as in otelcol.

```yaml
service:
  telemetry:
    logs: {level: info, encoding: console, progress_interval: 10s}   # encoding: console | json
    metrics: {level: basic, address: 127.0.0.1:8888}                 # level none: no endpoint
```
Metrics are served in Prometheus format on `http://<address>/metrics`. `progress_interval` (ours)
logs one progress line: spans/s in, spans written, queue depth, RSS.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from typing import Any

import orjson
from prometheus_client import start_http_server
from pydantic import BaseModel, ConfigDict, Field, model_validator

from spanpipe.configtypes import Duration, Endpoint, parse_endpoint
from spanpipe.procmem import MIB, current_rss
from spanpipe.telemetry import REGISTRY, counters, gauges

log = logging.getLogger("spanpipe.telemetry")


class LogsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
    level: str = "info"
    encoding: str = "console"
    progress_interval: Duration = "10s"  # type: ignore[assignment]

    @model_validator(mode="after")
    def _check(self) -> LogsConfig:
        self.level = self.level.lower()
        if self.level not in ("debug", "info", "warn", "warning", "error"):
            raise ValueError(f"level: unknown level '{self.level}' (debug, info, warn, error)")
        if self.encoding not in ("console", "json"):
            raise ValueError(f"encoding: use console or json, got '{self.encoding}'")
        return self


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
    level: str = "basic"
    address: Endpoint = "127.0.0.1:8888"

    @model_validator(mode="after")
    def _check(self) -> MetricsConfig:
        if self.level not in ("none", "basic", "normal", "detailed"):
            raise ValueError(f"level: use none, basic, normal or detailed, got '{self.level}'")
        return self


class TelemetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def configure_logging(config: LogsConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.encoding == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": "WARNING"}.get(config.level, config.level.upper()))


class SelfTelemetry:
    """Starts and stops the metrics endpoint and the progress line."""

    def __init__(self, config: TelemetryConfig) -> None:
        self.config = config
        self._server: Any = None
        self._stop = threading.Event()
        self._progress: threading.Thread | None = None

    def start(self) -> None:
        metrics = self.config.metrics
        if metrics.level != "none":
            host, port = parse_endpoint(metrics.address)
            try:
                self._server, _ = start_http_server(port, addr=host, registry=REGISTRY)
                log.info("metrics on http://%s:%d/metrics", host, self._server.server_port)
            except OSError as exc:
                # Unlike otelcol, a second collector on one machine still starts; it says so loudly.
                log.error("self-telemetry metrics not served: cannot listen on %s (%s); set "
                          "service::telemetry::metrics::address", metrics.address, exc.strerror or exc)
        if self.config.logs.progress_interval > 0:
            self._progress = threading.Thread(target=self._progress_loop, name="progress", daemon=True)
            self._progress.start()

    def stop(self) -> None:
        self._stop.set()
        if self._progress is not None:
            self._progress.join(5)
        if self._server is not None:
            _stop_serving(self._server)
            self._server = None

    def _progress_loop(self) -> None:
        """One line per interval while something happens (spans in, written, refused, queued);
        nothing while the collector is idle. Spans written are per exporter: a span every exporter
        writes is one span, not one per exporter."""
        interval = self.config.logs.progress_interval
        last_in, last_t = counters.value("receiver_accepted_spans"), time.monotonic()
        last_state: tuple[Any, ...] = ()
        while not self._stop.wait(interval):
            now_in, now_t = counters.value("receiver_accepted_spans"), time.monotonic()
            written = counters.by_label("exporter_sent_spans", "exporter")
            refused, queued = counters.value("receiver_refused_spans"), gauges.value("exporter_queue_size")
            state = (now_in, tuple(sorted(written.items())), refused, queued)
            if state != last_state or queued:
                per_exporter = ", ".join(f"{e} {n:.0f}" for e, n in sorted(written.items())) or "none"
                log.info("progress: %.0f spans/s in (%d total), written: %s, %d refused, queue depth %d, "
                         "RSS %d MiB", (now_in - last_in) / max(now_t - last_t, 1e-9), now_in, per_exporter,
                         refused, queued, current_rss() // MIB)
            last_in, last_t, last_state = now_in, now_t, state


def _stop_serving(server: Any) -> None:
    """Stop prometheus_client's server. Its loop looks for the stop request every 0.5 s; one
    connection wakes it at once (0.4 s off every collector's stop)."""
    stopping = threading.Thread(target=server.shutdown, name="metrics-stop")
    stopping.start()
    try:
        with socket.create_connection(server.server_address[:2], timeout=1):
            pass
    except OSError:
        pass
    stopping.join()
    server.server_close()
