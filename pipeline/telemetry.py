"""Self-telemetry: counters and gauges with otelcol's names (`otelcol_receiver_accepted_spans`, ...).

Backed by prometheus_client; the `service::telemetry::metrics` endpoint serves this registry on
`/metrics`. Names without the `otelcol_` meaning (ours) are registered with the `spanpipe_` prefix.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
GCCollector(registry=REGISTRY)  # python_gc_collections_total{generation}: how often the collector stops for it

# Our own metrics, not otelcol's: exposed as spanpipe_<name>.
OURS = ("rewards_extracted", "reward_malformed", "rollouts_completed", "warehouse_rows", "memory_limiter_state",
        "rollout_missing_spans", "events_dropped", "event_handler_errors", "exporter_retention_deleted_spans",
        "exporter_retention_archived_spans")


def metric_name(name: str) -> str:
    """otelcol's name for otelcol's metrics; ours get `spanpipe_` (a component may give it itself)."""
    if name.startswith("spanpipe_"):
        return name
    return ("spanpipe_" if name in OURS else "otelcol_") + name


class _Family:
    """Metric families created on first use, with the label names of that first use."""

    kind: type[Counter] | type[Gauge] | type[Histogram]

    def __init__(self, kind: type[Counter] | type[Gauge] | type[Histogram]) -> None:
        self.kind = kind
        self._metrics: dict[str, Any] = {}
        self.options: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _metric(self, name: str, labels: tuple[str, ...]) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            with self._lock:
                metric = self._metrics.get(name)
                if metric is None:
                    metric = self.kind(metric_name(name), name.replace("_", " "), labels, registry=REGISTRY,
                                       **self.options)
                    self._metrics[name] = metric
        return metric

    def value(self, name: str, **labels: str) -> float:
        """The sum over the samples matching `labels` (tests, the progress line); 0 when never used.
        For a histogram: how many observations."""
        return sum(s.value for s in self._samples(name) if all(s.labels.get(k) == v for k, v in labels.items()))

    def _samples(self, name: str) -> list[Any]:
        """The samples that count `name` (a counter's total, a histogram's count, a gauge's value)."""
        metric = self._metrics.get(name)
        if metric is None:
            return []
        sample_name = metric_name(name) + {Counter: "_total", Histogram: "_count"}.get(self.kind, "")
        return [s for s in metric.collect()[0].samples if s.name == sample_name]

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """The sum per value of `label` (e.g. per exporter); {} when never used."""
        out: dict[str, float] = {}
        for s in self._samples(name):
            if label in s.labels:
                out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
        return out

    def child(self, name: str, labels: dict[str, str]) -> Any:
        metric = self._metric(name, tuple(labels))
        return metric.labels(**labels) if labels else metric


class Counters(_Family):
    def __init__(self) -> None:
        super().__init__(Counter)

    def add(self, name: str, value: float = 1, **labels: str) -> None:
        self.child(name, labels).inc(value)

class Gauges(_Family):
    def __init__(self) -> None:
        super().__init__(Gauge)

    def set(self, name: str, value: float, **labels: str) -> None:
        self.child(name, labels).set(value)  # type: ignore[union-attr]

    def set_function(self, name: str, fn: Callable[[], float], **labels: str) -> None:
        self.child(name, labels).set_function(fn)  # type: ignore[union-attr]


class Histograms(_Family):
    """Latencies in seconds (Prometheus' default buckets from 5 ms, plus finer ones below)."""

    BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

    def __init__(self) -> None:
        super().__init__(Histogram)
        self.options = {"buckets": self.BUCKETS}

    def observe(self, name: str, value: float, **labels: str) -> None:
        self.child(name, labels).observe(value)


counters = Counters()
gauges = Gauges()
histograms = Histograms()
