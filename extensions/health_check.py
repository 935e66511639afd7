"""The `health_check` extension: `GET <path>` on 127.0.0.1:13133 answers 200 once every component
has started and 503 before that and while shutting down, with otelcol's JSON body."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from aiohttp import web

from spanpipe.component import Extension
from spanpipe.component import ComponentConfig
from spanpipe.configtypes import Endpoint, parse_endpoint
from spanpipe.httpserver import HttpServer
from spanpipe.registry import Factory


class HealthCheckConfig(ComponentConfig):
    endpoint: Endpoint = "127.0.0.1:13133"
    path: str = "/"

    def validate_config(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"path: must start with '/', got '{self.path}'")


class HealthCheckExtension(Extension):
    def __init__(self, component_id: str, config: HealthCheckConfig) -> None:
        super().__init__(component_id)
        host, port = parse_endpoint(config.endpoint)
        app = web.Application()
        app.router.add_get(config.path, self._health)
        self.server = HttpServer(app, host, port, "health-check", workers=1)
        self._since = time.time()

    async def _health(self, _request: web.Request) -> web.Response:
        if getattr(self, "host", None) is not None and self.host.ready():  # type: ignore[attr-defined]
            up = datetime.fromtimestamp(self._since, timezone.utc).isoformat()
            return web.json_response({"status": "Server available", "upSince": up,
                                      "uptime": f"{time.time() - self._since:.3f}s"})
        return web.json_response({"status": "Server not available"}, status=503)

    def start(self) -> None:
        self._since = time.time()
        self.server.start()
        self.log.info("health check on http://%s:%d", self.server.host, self.server.port)

    def shutdown(self) -> None:
        self.server.stop()


factory = Factory("health_check", "extensions", HealthCheckConfig,
                  lambda cid, cfg: HealthCheckExtension(cid, cfg))
