"""The `loadbalancing` exporter: the front tier of a multi-collector deployment. Every span of one
rollout goes to the same backend collector, so tail sampling by rollout, sequence ids, rollout
completion and triplets stay whole on that backend.

```yaml
exporters:
  loadbalancing:
    routing_key: rollout            # ours (default); otelcol's traceID and service too
    protocol:
      otlp: {timeout: 5s, tls: {insecure: true}}   # any setting of the otlp exporter
    resolver:
      static: {hostnames: [10.0.0.1:4317, 10.0.0.2:4317]}
      # dns: {hostname: collectors.internal, port: 4317, interval: 5s}
```
The key of a span: its rollout id (the `rollout_id` column when a `rollout` processor ran before,
else `agentlightning.rollout_id` on the span or its resource), else the rollout its trace is known
to belong to (learned from earlier spans, bounded), else its trace id. Keys go round a consistent
hash ring (100 points per backend, as otelcol's), so a change of backends moves only the keys
whose ring position changed. Each backend is an `otlp` exporter of its own — its own sending queue
and retry, on disk with `sending_queue.storage` — and a backend that is down keeps its rollouts'
spans in its queue until it returns: a rollout is never split across backends because of a
failure. Self-metrics are the otlp exporters' own, per backend (`exporter="loadbalancing/<host>"`).
"""

from __future__ import annotations

import bisect
import socket
import threading
import zlib
from collections import OrderedDict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spanpipe.component import ComponentConfig, Exporter
from spanpipe.configtypes import Duration
from spanpipe.emit.setup import ROLLOUT_ID
from spanpipe.exporters.otlp import factory as otlp_factory
from spanpipe.periodic import Periodic
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch

POINTS_PER_BACKEND = 100


class StaticResolver(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hostnames: list[str] = Field(min_length=1)


class DnsResolver(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hostname: str
    port: int = Field(4317, gt=0, lt=65536)
    interval: Duration = "5s"  # type: ignore[assignment]


class Resolver(BaseModel):
    model_config = ConfigDict(extra="forbid")
    static: StaticResolver | None = None
    dns: DnsResolver | None = None

    @model_validator(mode="after")
    def _one(self) -> Resolver:
        if (self.static is None) == (self.dns is None):
            raise ValueError("give exactly one resolver: static or dns")
        return self


class Protocol(BaseModel):
    model_config = ConfigDict(extra="forbid")
    otlp: dict[str, Any] = Field(default_factory=dict)


class LoadBalancingConfig(ComponentConfig):
    routing_key: Literal["rollout", "traceID", "service"] = "rollout"
    protocol: Protocol = Field(default_factory=Protocol)
    resolver: Resolver
    max_traces: int = Field(100_000, gt=0, description="trace → rollout mappings remembered")

    def validate_config(self) -> None:
        if "endpoint" in self.protocol.otlp:
            raise ValueError("protocol::otlp::endpoint: the resolver gives the endpoints")
        self.backend_config("127.0.0.1:4317")  # the otlp settings must make a valid otlp exporter

    def backend_config(self, endpoint: str) -> Any:
        cfg = otlp_factory.config_class.model_validate({**self.protocol.otlp, "endpoint": endpoint})
        cfg.validate_config()
        return cfg

    def extension_refs(self) -> dict[str, str]:
        return self.backend_config("127.0.0.1:4317").extension_refs()


class Ring:
    """Consistent hashing: each backend at POINTS_PER_BACKEND positions of a 32-bit ring."""

    def __init__(self, backends: list[str]) -> None:
        points = sorted((zlib.crc32(f"{b}-{i}".encode()), b) for b in backends for i in range(POINTS_PER_BACKEND))
        self.positions = [p for p, _ in points]
        self.owners = [b for _, b in points]

    def backend(self, key: str) -> str:
        at = bisect.bisect(self.positions, zlib.crc32(key.encode())) % len(self.positions)
        return self.owners[at]


class LoadBalancingExporter(Exporter):
    def __init__(self, component_id: str, config: LoadBalancingConfig) -> None:
        super().__init__(component_id)
        self.config = config
        self.backends: dict[str, Exporter] = {}
        self.ring: Ring | None = None
        self.trace_rollouts: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._resolving: Periodic | None = None

    # ---- backends ------------------------------------------------------------------------------
    def resolve(self) -> list[str]:
        res = self.config.resolver
        if res.static is not None:
            return sorted(dict.fromkeys(res.static.hostnames))
        assert res.dns is not None
        infos = socket.getaddrinfo(res.dns.hostname, res.dns.port, type=socket.SOCK_STREAM)
        hosts = {f"[{i[4][0]}]:{res.dns.port}" if ":" in i[4][0] else f"{i[4][0]}:{res.dns.port}" for i in infos}
        return sorted(hosts)

    def _set_backends(self, endpoints: list[str]) -> None:
        """Start exporters for new endpoints, then switch the ring, then drain the gone ones."""
        if not endpoints:
            self.log.error("the resolver found no backend; keeping %s", ", ".join(self.backends) or "none")
            return
        added = [e for e in endpoints if e not in self.backends]
        for endpoint in added:
            child = otlp_factory.create(f"{self.id}/{endpoint}", self.config.backend_config(endpoint))
            child.host = self.host
            child.start()
            self.backends[endpoint] = child
        with self._lock:
            gone = [e for e in self.backends if e not in endpoints]
            self.ring = Ring(endpoints)
            children = [self.backends.pop(e) for e in gone]
        for child in children:
            child.shutdown()  # drains what was queued for it
        if added or gone:
            self.log.info("backends: %s (added %s, removed %s)", ", ".join(endpoints), added or "none", gone or "none")

    def _refresh(self) -> None:
        endpoints = self.resolve()
        if set(endpoints) != set(self.backends):
            self._set_backends(endpoints)

    def start(self) -> None:
        self._set_backends(self.resolve())
        if self.config.resolver.dns is not None:
            self._resolving = Periodic(f"{self.id}-dns", self.config.resolver.dns.interval, self._refresh, self.log)
            self._resolving.start()

    def shutdown(self) -> None:
        if self._resolving is not None:
            self._resolving.stop()
        for child in list(self.backends.values()):
            child.shutdown()
        self.backends.clear()

    # ---- routing -------------------------------------------------------------------------------
    def keys(self, batch: SpanBatch) -> list[str]:
        n = len(batch)
        if self.config.routing_key == "traceID":
            return list(batch.trace_id)
        if self.config.routing_key == "service":
            return [batch.resources[batch.resource_index[i]].service_name or "" for i in range(n)]
        column = batch.extra.get("rollout_id")
        rollouts: list[Any] = list(column) if column is not None else [None] * n
        for i in range(n):
            if rollouts[i] is None:
                rollouts[i] = batch.attributes[i].get(ROLLOUT_ID) or \
                    batch.resources[batch.resource_index[i]].attributes.get(ROLLOUT_ID)
        with self._lock:
            for i in range(n):  # learn first, so untagged spans of this batch follow their trace too
                if rollouts[i] is not None:
                    self._remember(batch.trace_id[i], str(rollouts[i]))
            return [str(rollouts[i]) if rollouts[i] is not None else
                    self.trace_rollouts.get(batch.trace_id[i], batch.trace_id[i]) for i in range(n)]

    def _remember(self, trace_id: str, rollout: str) -> None:
        if trace_id in self.trace_rollouts:
            self.trace_rollouts.move_to_end(trace_id)
            return
        self.trace_rollouts[trace_id] = rollout
        if len(self.trace_rollouts) > self.config.max_traces:
            self.trace_rollouts.popitem(last=False)

    def consume(self, batch: SpanBatch) -> None:
        keys = self.keys(batch)
        with self._lock:
            ring, backends = self.ring, dict(self.backends)
        assert ring is not None, "exporter not started"
        parts: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            parts.setdefault(ring.backend(key), []).append(i)
        for endpoint, indices in parts.items():
            part = batch if len(parts) == 1 else batch.take(indices)
            backends[endpoint].consume(part)  # its queue; a full one refuses (back-pressure) as otlp does


factory = Factory("loadbalancing", "exporters", LoadBalancingConfig,
                  lambda cid, cfg: LoadBalancingExporter(cid, cfg))
