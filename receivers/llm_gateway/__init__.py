"""The `llm_gateway` receiver: an OpenAI-compatible reverse proxy in front of model servers
(vLLM, SGLang, any OpenAI-compatible endpoint) that records every call as one span, with the
token ids and sampling logprobs an RL trainer needs.

```yaml
receivers:
  llm_gateway:
    endpoint: 127.0.0.1:4320
    upstreams:                        # first match by model name (exact or glob) wins
      - model: "*"
        base_url: http://127.0.0.1:8000/v1
        api_key: ${env:UPSTREAM_API_KEY:-}   # sent upstream; never stored in spans
        model_version: ""             # the policy version of this upstream, if fixed
    request_token_ids: true           # ask for return_token_ids and logprobs unless the client did
    timeout: 600s
    auth: {authenticator: bearertokenauth}
```
Serves `POST /v1/chat/completions`, `POST /v1/completions` (streamed or not), `GET /v1/models`,
the same under `/rollout/{rollout_id}/attempt/{attempt_id}/v1/...`, and for trainers
`POST /v1/gateway/model_version`, `POST /v1/gateway/pause`, `POST /v1/gateway/resume`.
How a call finds its rollout and trace: `context.py`; what its span holds: `call.py`; how spans
reach the pipeline without ever slowing a call: `spans.py`.
"""

from __future__ import annotations

import os
from typing import Callable, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spanpipe import __version__
from spanpipe.component import Authenticator, ComponentConfig, Consumers, Receiver
from spanpipe.configtypes import Duration, Endpoint, parse_endpoint
from spanpipe.extensions.bearertokenauth import AuthSettings
from spanpipe.httpserver import HttpServer
from spanpipe.receivers.llm_gateway.proxy import GatewayApp, GatewayMetrics
from spanpipe.receivers.llm_gateway.workers import ProxyWorkers
from spanpipe.receivers.llm_gateway.spans import SpanBuffer
from spanpipe.registry import Factory
from spanpipe.spanbatch import Resource
from spanpipe.telemetry import gauges
from spanpipe.tlsconfig import ServerTLS


def glob_match(pattern: str, name: str) -> bool:
    """`*` and `?` wildcards, matched in O(len(pattern) × len(name)) at worst (no regex)."""
    p = n = 0
    star, mark = -1, 0
    while n < len(name):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == name[n]):
            p, n = p + 1, n + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, n, p + 1
        elif star >= 0:
            p, mark = star + 1, mark + 1
            n = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


class Upstream(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field("*", description="model name this upstream serves: exact, or a glob with * and ?")
    base_url: str
    api_key: str = ""
    model_version: str = ""
    provider_name: str = Field("openai", description="gen_ai.provider.name on this upstream's spans")
    token_ids_api: Literal["vllm", "sglang"] = Field(
        "vllm", description="how to ask for token ids: vLLM's return_token_ids, or SGLang's "
        "return_prompt_token_ids + return_meta_info (>= 0.5.13; non-streamed calls only)")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {value!r}")
        return value.rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)


# `workers: auto` on a large machine: more proxy processes than this serve more calls than a
# model server behind one gateway answers, and each costs its memory.
MAX_AUTO_WORKERS = 4


class LlmGatewayConfig(ComponentConfig):
    endpoint: Endpoint = "127.0.0.1:4320"
    upstreams: list[Upstream] = Field(default_factory=list)
    request_token_ids: bool = True
    timeout: Duration = "600s"  # type: ignore[assignment]
    tls: ServerTLS | None = None
    auth: AuthSettings | None = None
    max_concurrent_calls: int = Field(1024, ge=1, description="calls beyond this get 429 with Retry-After")
    max_request_body_size: int = Field(32 * 1024 * 1024, gt=0)
    model_version_header: str = Field("x-model-version",
                                      description="response header of the upstream naming its policy version")
    buffer_size: int = Field(20_000, ge=1, description="spans held while the pipeline refuses them")
    flush_interval: Duration = "50ms"  # type: ignore[assignment]
    max_batch_spans: int = Field(1024, ge=1)
    drain_timeout: Duration = Field("60s", description="at shutdown: time for calls in flight and buffered spans")
    workers: int | Literal["auto"] = Field(
        "auto", description="proxy processes accepting calls on the endpoint (0: the collector process itself; "
        f"auto: one per core, at most {MAX_AUTO_WORKERS}); their spans join the pipeline in the collector process")

    def worker_count(self) -> int:
        """`auto` is one per core: the collector process's share of a call (its span, in batches)
        is small. On 2 cores, at 16 clients, two proxy processes add 0.4 ms to a call, one 1.0 ms,
        the collector process itself 2.3 ms; at 64 they serve as many calls or more
        (bench/README.md). At most MAX_AUTO_WORKERS: each serves ~1,000 calls/s."""
        if self.workers == "auto":
            return min(len(os.sched_getaffinity(0)), MAX_AUTO_WORKERS)
        return self.workers

    def upstream_for(self, model: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.model == "*" or u.model == model or glob_match(u.model, model)),
                    None)

    def validate_config(self) -> None:
        if not self.upstreams:
            raise ValueError("upstreams: list at least one model server (base_url: http://host:port/v1)")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.workers != "auto" and self.workers < 0:
            raise ValueError("workers must be 0 or more, or auto")

    def extension_refs(self) -> dict[str, str]:
        return {"auth::authenticator": self.auth.authenticator} if self.auth is not None else {}


class LlmGatewayReceiver(Receiver):
    def __init__(self, component_id: str, config: LlmGatewayConfig, consumers: Consumers) -> None:
        super().__init__(component_id, consumers)
        self.config = config
        self.authenticate: Callable[[str | None], bool] | None = None
        self.server: HttpServer | None = None
        self.workers: ProxyWorkers | None = None
        self.spans: SpanBuffer  # set in start()
        self.metrics = GatewayMetrics(component_id)

    @property
    def port(self) -> int:
        if self.workers is not None:
            return self.workers.port
        return self.server.port if self.server is not None else 0

    def start(self) -> None:
        if self.next is None:
            raise ValueError(f"{self.id}: put the receiver in a traces pipeline")
        cfg = self.config
        if cfg.auth is not None:
            self.authenticate = self.host.extension_as(cfg.auth.authenticator, Authenticator).authenticate
        resource = Resource({"service.name": "spanpipe-llm-gateway", "spanpipe.receiver": self.id},
                            "spanpipe-llm-gateway")
        self.spans = SpanBuffer(self.id, self.next, resource, cfg.buffer_size, cfg.flush_interval,
                                cfg.max_batch_spans, self.log, __version__)
        host, port = parse_endpoint(cfg.endpoint)
        self.spans.start()
        try:
            workers = cfg.worker_count()
            if workers:
                self.workers = ProxyWorkers(self, workers)
                self.workers.start(host, port)
                in_flight = self.workers.in_flight
            else:
                self.app = GatewayApp(self)
                self.server = HttpServer(self.app.application(), host, port, self.id, workers=1,
                                         shutdown_timeout=cfg.drain_timeout,
                                         ssl_context=cfg.tls.ssl_context() if cfg.tls else None)
                self.server.start()
                in_flight = self._in_flight_here
        except BaseException:
            if self.workers is not None:
                self.workers.stop(0)
                self.workers = None
            self.spans.close(0)
            raise
        gauges.set_function("spanpipe_gateway_in_flight", in_flight, receiver=self.id)
        gauges.set_function("spanpipe_gateway_buffered_spans", lambda: len(self.spans), receiver=self.id)
        self.log.info("LLM gateway listening on %s:%d%s → %s", host, self.port,
                      f" ({workers} proxy processes)" if workers else "",
                      ", ".join(f"{u.model} @ {u.base_url}" for u in cfg.upstreams))

    def _in_flight_here(self) -> int:
        return self.app.state.in_flight

    def shutdown(self) -> None:
        """Let calls in flight finish (streams too), then hand every buffered span to the pipeline."""
        if self.server is None and self.workers is None:
            return  # never started
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.workers is not None:
            self.workers.stop(self.config.drain_timeout)
            self.workers = None
        self.spans.close(self.config.drain_timeout)

factory = Factory("llm_gateway", "receivers", LlmGatewayConfig,
                  lambda cid, cfg, consumers: LlmGatewayReceiver(cid, cfg, consumers))
