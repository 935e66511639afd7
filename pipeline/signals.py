"""What differs between the two signals that flow, in one place: spans travel as a SpanBatch, log
records as an Arrow table of `LOGS_COLUMNS`. Queues, batching, retry and fan-out are written once
against these functions."""

from __future__ import annotations

from typing import Sequence, Union

import pyarrow as pa

from spanpipe.spanbatch import SpanBatch

TRACES, LOGS = "traces", "logs"
SIGNALS = (TRACES, LOGS)

Item = Union[SpanBatch, pa.Table]


def signal_of(item: Item) -> str:
    return LOGS if isinstance(item, pa.Table) else TRACES


def unit(item: Item) -> str:
    """The name counters use for one thing of the item: spans or log records."""
    return "log_records" if isinstance(item, pa.Table) else "spans"


def merge(items: Sequence[Item]) -> Item:
    """One item holding all of `items` (all of one signal), in order."""
    if len(items) == 1:
        return items[0]
    if isinstance(items[0], pa.Table):
        return pa.concat_tables(items)  # type: ignore[arg-type]
    return SpanBatch.concat(list(items))  # type: ignore[arg-type]


def halves(item: Item) -> tuple[Item, Item]:
    n = len(item)
    if isinstance(item, pa.Table):
        return item.slice(0, n // 2), item.slice(n // 2)
    return item.take(list(range(n // 2))), item.take(list(range(n // 2, n)))
