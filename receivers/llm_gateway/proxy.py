"""The gateway's HTTP side: an OpenAI-compatible reverse proxy (aiohttp server, aiohttp client).

Responses go back to the client as the upstream sent them (status, body, SSE chunks as they
arrive); the gateway reads a copy to record the call. Errors the gateway makes itself have
OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import aiohttp
import orjson
from aiohttp import web

from spanpipe.emit.setup import ATTEMPT_ID, ROLLOUT_ID, TASK_ID
from spanpipe.receivers.llm_gateway.call import SGLANG_STREAM, Call, Operation
from spanpipe.receivers.llm_gateway.context import CallContext, call_context
from spanpipe.receivers.llm_gateway.spans import GatewaySpan, estimated_bytes
from spanpipe.spanbatch import STATUS_ERROR, STATUS_UNSET
from spanpipe.telemetry import counters, histograms

if TYPE_CHECKING:
    from spanpipe.receivers.llm_gateway import LlmGatewayReceiver, Upstream

ENDPOINTS: dict[str, Operation] = {"chat/completions": "chat", "completions": "text_completion"}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "upgrade",
               "proxy-authenticate", "proxy-authorization", "te", "trailer"}


def openai_error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _passthrough_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}


class GatewayMetrics:
    """The gateway's self-metrics (otelcol naming style, labelled by receiver id)."""

    def __init__(self, receiver_id: str) -> None:
        self.labels = {"receiver": receiver_id}
        self._latency = histograms.child("spanpipe_gateway_upstream_latency_seconds", self.labels)
        self._ttft = histograms.child("spanpipe_gateway_time_to_first_token_seconds", self.labels)

    def call(self, operation: str, outcome: str) -> None:
        counters.add("spanpipe_gateway_calls", 1, operation=operation, outcome=outcome, **self.labels)

    def refused(self, reason: str) -> None:
        counters.add("receiver_refused_requests", 1, reason=reason, **self.labels)

    def upstream_latency(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def first_token(self, seconds: float) -> None:
        self._ttft.observe(seconds)


class Paused:
    """Pause/resume for weight updates: pause holds new calls and waits for the in-flight ones."""

    def __init__(self) -> None:
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


class GatewayApp:
    def __init__(self, receiver: LlmGatewayReceiver) -> None:
        self.receiver = receiver
        self.config = receiver.config
        self.session: aiohttp.ClientSession | None = None
        self.state = Paused()
        self.model_version = ""
        self.metrics = receiver.metrics
        # Where pause, resume and a new model version take effect: here, or (proxy workers) in every
        # worker, through the collector process.
        self.control: Callable[[str, str], Awaitable[None]] = self.apply

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_request_body_size)
        for prefix in ("", "/rollout/{rollout_id}/attempt/{attempt_id}"):
            for path in ENDPOINTS:
                app.router.add_post(f"{prefix}/v1/{path}", self.completion)
            app.router.add_get(f"{prefix}/v1/models", self.models)
        app.router.add_route("*", "/v1/gateway/model_version", self.set_model_version)
        app.router.add_post("/v1/gateway/pause", self.pause)
        app.router.add_post("/v1/gateway/resume", self.resume)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        app.on_startup.append(self._open_session)
        app.on_cleanup.append(self._close_session)
        return app

    async def _open_session(self, app: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout, sock_connect=min(self.config.timeout, 10))
        connector = aiohttp.TCPConnector(limit=self.config.max_concurrent_calls, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False,
                                             json_serialize=lambda o: orjson.dumps(o).decode())

    async def _close_session(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    # ---- admin and listing -------------------------------------------------------------------
    def _unauthorized(self, request: web.Request) -> web.Response | None:
        check = self.receiver.authenticate
        if check is not None and not check(request.headers.get("Authorization")):
            self.metrics.refused("unauthenticated")
            return openai_error(401, "missing or wrong bearer token", "authentication_error", "invalid_api_key")
        return None

    async def not_found(self, request: web.Request) -> web.Response:
        return openai_error(404, f"Unknown request URL: {request.method} {request.path}. The gateway serves "
                            "/v1/chat/completions, /v1/completions and /v1/models.", code="unknown_url")

    async def set_model_version(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if request.method == "POST":
            try:
                body = orjson.loads(await request.read())
                version = body["model_version"]
                if not isinstance(version, str):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return openai_error(400, 'expected a JSON body {"model_version": "<string>"}')
            await self.control("model_version", version)
            self.receiver.log.info("model version set to %r", version)
        elif request.method != "GET":
            return openai_error(405, "use GET or POST")
        return web.json_response({"model_version": self.model_version})

    async def pause(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        started = time.monotonic()
        await self.control("pause", "")
        self.receiver.log.info("paused; waited %.3fs for in-flight calls", time.monotonic() - started)
        return web.json_response({"paused": True, "in_flight": self.state.in_flight})

    async def resume(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        await self.control("resume", "")
        self.receiver.log.info("resumed")
        return web.json_response({"paused": False})

    async def apply(self, operation: str, value: str) -> None:
        """Pause (hold new calls, wait for those in flight), resume, or set the model version, here."""
        if operation == "pause":
            self.state.resumed.clear()
            await self.state.idle.wait()
        elif operation == "resume":
            self.state.resumed.set()
        elif operation == "model_version":
            self.model_version = value
        else:
            raise ValueError(f"unknown gateway operation {operation!r}")

    async def models(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        assert self.session is not None
        seen: dict[str, dict[str, Any]] = {}
        for up in self.config.upstreams:
            try:
                async with self.session.get(f"{up.base_url}/models", headers=self._upstream_headers(up, request)) as r:
                    if r.status == 200:
                        for m in (await r.json(loads=orjson.loads)).get("data") or ():
                            if isinstance(m, dict) and isinstance(m.get("id"), str):
                                seen.setdefault(m["id"], m)
            except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError) as exc:
                self.receiver.log.warning("listing models of %s failed: %s", up.base_url, exc)
        return web.json_response({"object": "list", "data": list(seen.values())}, dumps=lambda o: orjson.dumps(o).decode())

    # ---- the calls ---------------------------------------------------------------------------
    def _upstream_headers(self, up: Upstream, request: web.Request) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": request.headers.get("Accept", "*/*")}
        if up.api_key:
            headers["Authorization"] = f"Bearer {up.api_key}"
        elif self.receiver.authenticate is None and "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        return headers

    async def completion(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if self.state.in_flight >= self.config.max_concurrent_calls:
            self.metrics.refused("max_concurrent_calls")
            return openai_error(429, f"the gateway has {self.config.max_concurrent_calls} calls in flight; "
                                "retry shortly", "rate_limit_error", headers={"Retry-After": "1"})
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return openai_error(413, f"request body larger than {self.config.max_request_body_size} bytes")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return openai_error(400, f"We could not parse the JSON body of your request: {exc}")
        if not isinstance(body, dict):
            return openai_error(400, "the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str):
            return openai_error(400, "you must provide a model parameter (a string)", code="missing_model")
        upstream = self.config.upstream_for(model)
        if upstream is None:
            return openai_error(404, f"The model `{model}` does not exist: no upstream of this gateway serves it.",
                                code="model_not_found")
        operation = ENDPOINTS[request.path.split("/v1/", 1)[1]]
        if not self.state.resumed.is_set():
            await self.state.resumed.wait()
        self.state.enter()
        try:
            return await self._proxy(request, raw, body, operation, upstream)
        finally:
            self.state.leave()

    def _token_request(self, body: dict[str, Any], operation: Operation, up: Upstream,
                       call: Call) -> dict[str, Any] | None:
        """The body with token ids and logprobs asked for the upstream's way (vLLM:
        `return_token_ids`; SGLang: `return_prompt_token_ids` + `return_meta_info`, non-streamed
        only), or None when it needs no change. Marks on `call` whether ids were asked for."""
        changes: dict[str, Any] = {}
        if self.config.request_token_ids:
            if up.token_ids_api == "vllm":
                changes = {"return_token_ids": True}
            elif call.stream:
                call.missing_reason_if_none = SGLANG_STREAM
            else:
                changes = {"return_prompt_token_ids": True, "return_meta_info": True}
            if changes and body.get("logprobs") is None:
                changes["logprobs"] = True if operation == "chat" else 0
            changes = {k: v for k, v in changes.items() if k not in body}
        sent = {**body, **changes}
        call.token_ids_requested = sent.get("return_token_ids") is True or sent.get("return_meta_info") is True
        return sent if changes else None

    async def _proxy(self, request: web.Request, raw: bytes, body: dict[str, Any], operation: Operation,
                     up: Upstream) -> web.StreamResponse:
        assert self.session is not None
        ctx = call_context(request.headers, request.match_info.get("rollout_id"), request.match_info.get("attempt_id"))
        span_id = os.urandom(8).hex()
        stream = body.get("stream") is True
        call = Call(operation, body, stream)
        changed = self._token_request(body, operation, up, call)
        headers = self._upstream_headers(up, request)
        headers["traceparent"] = f"00-{ctx.trace_id}-{span_id}-01"
        start_ns, t0 = time.time_ns(), time.perf_counter()
        # The call ends when the answer's last bytes leave for the client: the client may act on
        # them (emit a reward span) before this coroutine runs again, and a reward is matched to
        # the calls that ended before it started.
        end_ns: int | None = None
        outcome, status, error, version = "ok", 0, "", ""
        first_chunk: float | None = None
        response: web.StreamResponse
        try:
            url = f"{up.base_url}/{request.path.split('/v1/', 1)[1]}"
            async with self.session.post(url, data=orjson.dumps(changed) if changed is not None else raw,
                                         headers=headers) as upstream:
                status = upstream.status
                version = upstream.headers.get(self.config.model_version_header, "") if self.config.model_version_header else ""
                is_sse = upstream.content_type == "text/event-stream"
                if not is_sse:
                    data = await upstream.read()
                    self.metrics.upstream_latency(time.perf_counter() - t0)
                    response = web.Response(status=status, body=data, headers=_passthrough_headers(upstream))
                    try:  # the client has its answer before the call is recorded
                        end_ns = time.time_ns()
                        await response.prepare(request)
                        await response.write_eof()
                    except (ConnectionResetError, ConnectionError) as exc:
                        outcome, error = "client_disconnected", f"the client left before the answer was sent ({exc})"
                    if status != 200:
                        outcome, error = "upstream_error", f"upstream answered HTTP {status}: {data[:300]!r}"
                    else:
                        try:
                            parsed = orjson.loads(data)
                            if isinstance(parsed, dict):
                                call.add_response(parsed)
                        except orjson.JSONDecodeError:
                            outcome, error = "upstream_error", "the upstream answered 200 with a body that is not JSON"
                else:
                    response = web.StreamResponse(status=status, headers=_passthrough_headers(upstream))
                    await response.prepare(request)
                    relayed = False
                    try:
                        async for data in upstream.content.iter_any():
                            if first_chunk is None:
                                first_chunk = time.perf_counter() - t0
                                self.metrics.first_token(first_chunk)
                            call.feed_sse(data)
                            end_ns = time.time_ns()
                            await response.write(data)
                        relayed = True
                        await response.write_eof()
                    except (ConnectionResetError, ConnectionError, aiohttp.ClientConnectionResetError) as exc:
                        if not relayed:  # a client gone after the last chunk (done reading) got it all
                            outcome, error = "client_disconnected", f"the client disconnected mid-stream ({exc}); " \
                                "the upstream request was cancelled; the span holds what arrived until then"
                            upstream.close()
                    self.metrics.upstream_latency(time.perf_counter() - t0)
                    if status != 200 and outcome == "ok":
                        outcome, error = "upstream_error", f"upstream answered HTTP {status}"
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            outcome, error, status = "unreachable", f"upstream {up.base_url} unreachable: {exc}", 502
            response = openai_error(502, f"the gateway could not reach the model server: {exc}", "api_error",
                                    "upstream_unreachable")
        except asyncio.TimeoutError:
            outcome, error, status = "timeout", f"upstream {up.base_url} did not answer within {self.config.timeout}s", 504
            response = openai_error(504, error, "api_error", "upstream_timeout")
        except aiohttp.ClientPayloadError as exc:
            outcome, error = "upstream_error", f"the upstream's answer broke off: {exc}"
            response = openai_error(502, error, "api_error", "upstream_broken")
        finally:
            self._record(call, ctx, span_id, start_ns, end_ns or time.time_ns(), up, outcome, status, error, version,
                         stream, first_chunk)
        return response

    def _record(self, call: Call, ctx: CallContext, span_id: str, start_ns: int, end_ns: int, up: Upstream,
                outcome: str, status: int, error: str, version: str, stream: bool, first_chunk: float | None) -> None:
        answered = bool(call.choices)
        attrs = call.attributes(up.provider_name, answered)
        attrs["spanpipe.model_version"] = up.model_version or version or self.model_version
        attrs["server.address"] = up.host
        attrs["server.port"] = up.port
        attrs["spanpipe.gateway.stream"] = stream
        if status:
            attrs["http.response.status_code"] = status
        if first_chunk is not None:
            attrs["spanpipe.gateway.time_to_first_chunk_ms"] = round(first_chunk * 1000, 3)
        if ctx.rollout_id:
            attrs[ROLLOUT_ID] = ctx.rollout_id
        if ctx.attempt_id:
            attrs[ATTEMPT_ID] = ctx.attempt_id
        if ctx.task_id:
            attrs[TASK_ID] = ctx.task_id
        if outcome != "ok":
            attrs["error.type"] = str(status) if outcome == "upstream_error" and status else outcome
        model = attrs.get("gen_ai.request.model", "")
        self.receiver.spans.add(GatewaySpan(
            ctx.trace_id, span_id, ctx.parent_span_id, f"{call.operation} {model}".strip(), start_ns, end_ns,
            STATUS_ERROR if outcome != "ok" else STATUS_UNSET, error, attrs, estimated_bytes(attrs)))
        self.metrics.call(call.operation, outcome)
