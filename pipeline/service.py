"""The service: builds the component graph from a Config, starts it, drains it on shutdown.

Graph, as in otelcol: each pipeline gets its own processor instances; receivers and exporters
are shared by id across pipelines. A receiver feeds every pipeline that lists it (fan-out); the
last processor of a pipeline feeds every exporter of that pipeline (fan-out).

Start: exporters → processors (last to first) → receivers. Shutdown: the reverse, so each stage
drains into a stage that is still running.
"""

from __future__ import annotations

import logging
import signal
import threading

from spanpipe.component import (C, Component, Consumer, Consumers, Exporter, Extension, FanOut, Processor, Receiver,
                                 extension_as)
from spanpipe.config import Config
from spanpipe.configyaml import component_type
from spanpipe.procmem import collect_garbage_less_often
from spanpipe.registry import Registry
from spanpipe.selftelemetry import SelfTelemetry

log = logging.getLogger("spanpipe.service")


class Service:
    def __init__(self, config: Config, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.extensions: dict[str, Extension] = {}
        self.exporters: dict[str, Exporter] = {}
        self.processors: list[list[Processor]] = []
        self.receivers: dict[str, Receiver] = {}
        self._started: list[Component] = []
        self._stopped = threading.Event()
        self.telemetry = SelfTelemetry(config.telemetry)
        self._ready = False
        self._build()

    def _factory(self, kind: str, cid: str):
        f = self.registry.get(kind, component_type(cid))
        assert f is not None, f"{kind}::{cid} was validated but has no factory"
        return f

    def extension(self, extension_id: str) -> Extension:
        return self.extensions[extension_id]

    def extension_as(self, extension_id: str, capability: type[C]) -> C:
        return extension_as(self.extensions, extension_id, capability)

    def ready(self) -> bool:
        """Every component started and not shutting down (the health_check extension's answer)."""
        return self._ready

    def _build(self) -> None:
        cfg = self.config
        for xid in cfg.service_extensions:
            self.extensions[xid] = self._factory("extensions", xid).create(xid, cfg.extensions[xid])
        for pipe in cfg.pipelines.values():
            for eid in pipe.exporters:
                if eid not in self.exporters:
                    self.exporters[eid] = self._factory("exporters", eid).create(eid, cfg.exporters[eid])
        # Each receiver gets one consumer per signal: the fan-out to its pipelines of that signal.
        entry_points: dict[str, dict[str, list[Consumer]]] = {}
        for pname, pipe in cfg.pipelines.items():
            nxt: Consumer = FanOut([self.exporters[e] for e in pipe.exporters])
            chain: list[Processor] = []
            for pid in reversed(pipe.processors):
                proc = self._factory("processors", pid).creator(pipe.signal)(f"{pid}", cfg.processors[pid], nxt)
                chain.insert(0, proc)
                nxt = proc
            self.processors.append(chain)
            for rid in pipe.receivers:
                entry_points.setdefault(rid, {}).setdefault(pipe.signal, []).append(nxt)
        for rid, by_signal in entry_points.items():
            consumers = Consumers(**{signal: FanOut(nexts) for signal, nexts in by_signal.items()})
            self.receivers[rid] = self._factory("receivers", rid).create(rid, cfg.receivers[rid], consumers)

    def start(self) -> None:
        self.telemetry.start()
        order: list[Component] = [*self.extensions.values(), *self.exporters.values()]
        for chain in self.processors:
            order.extend(reversed(chain))
        order.extend(self.receivers.values())
        for comp in order:
            log.debug("starting %s", comp.id)
            comp.host = self
            try:
                comp.start()
            except Exception:
                log.error("cannot start %s; shutting down what started", comp.id)
                self.shutdown()
                raise
            self._started.append(comp)
        self._ready = True
        log.info("collector started: %d pipeline(s), receivers %s, exporters %s",
                 len(self.config.pipelines), ", ".join(self.receivers), ", ".join(self.exporters))

    def shutdown(self) -> None:
        """Stop accepting, then drain every stage into the next; safe to call twice."""
        # Receivers first (in-flight requests finish), then processors in pipeline order so a
        # batch flushes into exporters that still run, then exporters.
        self._ready = False
        started = set(map(id, self._started))
        order: list[Component] = [*self.receivers.values()]
        for chain in self.processors:
            order.extend(chain)
        order.extend(self.exporters.values())
        order.extend(self.extensions.values())
        for comp in order:
            if id(comp) not in started:
                continue
            log.debug("shutting down %s", comp.id)
            try:
                comp.shutdown()
            except Exception:  # noqa: BLE001 - keep draining the rest
                log.exception("error shutting down %s", comp.id)
        self._started.clear()
        self.telemetry.stop()
        self._stopped.set()

    def run(self) -> None:
        """Start, block until SIGTERM/SIGINT, then drain and return."""
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            if stop.is_set():
                log.info("received %s again: already draining", signal.Signals(signum).name)
            else:
                log.info("received %s: draining", signal.Signals(signum).name)
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            collect_garbage_less_often()
            while not stop.wait(0.5):
                pass
        finally:
            self.shutdown()  # a second signal while draining does not cut the drain short
            for s, h in previous.items():
                signal.signal(s, h)
            log.info("collector stopped")
