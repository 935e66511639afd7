"""What the adapters need from a warehouse: SQL in, Arrow out.

`Warehouse` (a file, a running collector, a lake) is one such source; the triplet, message and
trajectory adapters are written against this protocol, not against the `Warehouse` facade, which
imports them for its `.triplets()`, `.messages()` and `.trajectories()`.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol

import pyarrow as pa

ARROW_STREAM = "application/vnd.apache.arrow.stream"  # how the query API answers in Arrow


class WarehouseError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the query API's HTTP status, when it answered


class SqlSource(Protocol):
    def sql(self, query: str) -> pa.Table: ...

    def sql_in_background(self, query: str) -> Future[pa.Table]:
        """The same query, started now and read later (so two can run at once)."""
        ...
