"""OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs` with protobuf or OTLP/JSON bodies, gzip allowed
(a path is served only when the receiver is in a pipeline of that signal; otherwise 404).

Status codes as in otelcol and the OTLP spec: 405 wrong method, 415 wrong content type,
400 undecodable body, 413 body too large (after decompression), 429/503 retryable refusals
(with Retry-After), 500 permanent errors. Error bodies are google.rpc.Status in the request's
encoding.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from google.protobuf import json_format
from google.rpc import status_pb2

from spanpipe import admission
from spanpipe.configtypes import parse_endpoint
from spanpipe.errors import PipelineError
from spanpipe.httpserver import HttpServer
from spanpipe.receivers.otlp import client_metadata

if TYPE_CHECKING:
    from spanpipe.receivers.otlp import HttpProtocol, OtlpReceiver, Signal

log = logging.getLogger("spanpipe.receivers.otlp.http")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
_GRPC_CODES = {"INVALID_ARGUMENT": 3, "RESOURCE_EXHAUSTED": 8, "UNAVAILABLE": 14, "INTERNAL": 13}


SUPPORTED_ENCODINGS = ("", "identity", "none", "gzip", "deflate")


class OtlpHttpServer:
    def __init__(self, receiver: OtlpReceiver, config: HttpProtocol) -> None:
        self.receiver, self.config = receiver, config
        host, port = parse_endpoint(config.endpoint)
        app = web.Application(client_max_size=config.max_request_body_size)
        for signal in receiver.signals():
            app.router.add_route("*", getattr(config, signal.url_path_setting), functools.partial(self._export, signal))
        ssl_context = config.tls.ssl_context() if config.tls else None
        self.server = HttpServer(app, host, port, "otlp-http", workers=config.workers, ssl_context=ssl_context)
        self._authenticate = None

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self._authenticate = self.receiver.authenticator(self.config)
        self.server.start()
        log.info("OTLP HTTP receiver listening on %s:%d", self.server.host, self.server.port)

    def stop(self) -> None:
        self.server.stop()

    def _error(self, status: int, message: str, content_type: str, retry_after: int | None = None,
               grpc_code: int = 13) -> web.Response:
        st = status_pb2.Status(code=grpc_code, message=message)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        if content_type == JSON:
            return web.Response(status=status, body=json_format.MessageToJson(st).encode(),
                                content_type=JSON, headers=headers)
        return web.Response(status=status, body=st.SerializeToString(), content_type=PROTOBUF,
                            headers=headers)

    def _handle(self, signal: Signal, body: bytes, content_type: str, metadata: dict[str, tuple[str, ...]]) -> bytes:
        with admission.decoding(body):
            decoded = self.receiver.decode(signal, body, json=content_type == JSON)
        self.receiver.deliver(signal, decoded, metadata)
        resp = signal.response(decoded)
        if content_type == JSON:
            return json_format.MessageToJson(resp).encode()
        return resp.SerializeToString()

    async def _export(self, signal: Signal, request: web.Request) -> web.Response:
        ctype = _CONTENT_TYPES.get(request.content_type)
        if request.method != "POST":
            return self._error(405, f"method {request.method} not allowed; use POST", ctype or JSON,
                               grpc_code=12)
        if ctype is None:
            return self._error(415, f"unsupported Content-Type '{request.content_type}'; use "
                               f"{PROTOBUF} or {JSON}", JSON, grpc_code=3)
        if self._authenticate is not None and not self._authenticate(request.headers.get("Authorization")):
            self.receiver.count_refused_request("unauthenticated")
            return self._error(401, "missing or wrong bearer token", ctype, grpc_code=16)
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in SUPPORTED_ENCODINGS:
            return self._error(400, f"unsupported Content-Encoding '{encoding}'; use gzip, deflate "
                               "or none", ctype, grpc_code=3)
        try:
            admission.check()  # refuse before reading and decoding the body
        except PipelineError as exc:
            self.receiver.count_refused_request("memory_limit")
            return self._error(exc.http_status, str(exc), ctype, 1, _GRPC_CODES[exc.grpc_code])
        try:
            # aiohttp inflates gzip/deflate and applies client_max_size to the inflated size.
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._error(413, "request body (after decompression) larger than "
                               f"max_request_body_size ({self.config.max_request_body_size} bytes)",
                               ctype, grpc_code=8)
        except Exception as exc:  # noqa: BLE001 - a corrupt compressed stream
            return self._error(400, f"cannot read request body: {exc}", ctype, grpc_code=3)
        try:
            metadata = client_metadata(request.headers.items()) if self.config.include_metadata else {}
            out = await self.server.run_blocking(self._handle, signal, body, ctype, metadata)
        except PipelineError as exc:
            retry_after = 1 if exc.retryable else None
            return self._error(exc.http_status, str(exc), ctype, retry_after,
                               _GRPC_CODES.get(exc.grpc_code, 13))
        except Exception as exc:  # noqa: BLE001 - never let a request take the server down
            log.exception("unexpected error handling an export")
            return self._error(500, f"internal error: {exc}", ctype)
        return web.Response(status=200, body=out, content_type=ctype)
