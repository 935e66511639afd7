"""Self-telemetry: counters with otelcol's names (`otelcol_receiver_accepted_spans`, ...).

Backed by prometheus_client so the same registry can be served on /metrics.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter


class Counters:
    def __init__(self, prefix: str = "otelcol_") -> None:
        self.prefix = prefix
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Counter] = {}
        self._lock = threading.Lock()

    def _metric(self, name: str, labels: tuple[str, ...]) -> Counter:
        metric = self._metrics.get(name)
        if metric is None:
            with self._lock:
                metric = self._metrics.get(name)
                if metric is None:
                    metric = Counter(self.prefix + name, name.replace("_", " "), labels,
                                     registry=self.registry)
                    self._metrics[name] = metric
        return metric

    def add(self, name: str, value: float = 1, **labels: str) -> None:
        metric = self._metric(name, tuple(labels))
        (metric.labels(**labels) if labels else metric).inc(value)


counters = Counters()
