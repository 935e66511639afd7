"""The two signals that flow — spans as a `SpanBatch`, log records as a `LogBatch` — and what
queues, batching, retry and fan-out need of either: each batch says its signal and its unit, and
concatenates and slices itself, so that code is written once for both."""

from __future__ import annotations

from typing import Sequence, Union

from spanpipe.logbatch import LogBatch
from spanpipe.spanbatch import SpanBatch

TRACES, LOGS = SpanBatch.signal, LogBatch.signal
SIGNALS = (TRACES, LOGS)

Item = Union[SpanBatch, LogBatch]


def merge(items: Sequence[Item]) -> Item:
    """One item holding all of `items` (all of one signal), in order."""
    if len(items) == 1:
        return items[0]
    return type(items[0]).concat(list(items))  # type: ignore[arg-type]


def split(item: Item, parts: int) -> list[Item]:
    """`item` as `parts` items of consecutive spans or records, as even as can be, none empty."""
    n = len(item)
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [item.slice(a, b) for a, b in zip(bounds, bounds[1:])]  # type: ignore[return-value]
