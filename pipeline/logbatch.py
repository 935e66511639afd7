"""LogBatch: OTLP log records in transit, the logs signal's counterpart of `SpanBatch`.

The records are one Arrow table of `columns.LOGS` (what the warehouse's `logs` table holds), so a
batch of records costs no Python object per record. Queues, batching, retry and fan-out handle
both kinds of batch through `signal`, `unit`, `concat` and `slice` alone (`pipeline/signals.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa


@dataclass(frozen=True)
class LogBatch:
    table: pa.Table

    signal: ClassVar[str] = "logs"
    unit: ClassVar[str] = "log_records"  # what counters call one item

    def __len__(self) -> int:
        return self.table.num_rows

    @staticmethod
    def concat(batches: list[LogBatch]) -> LogBatch:
        return LogBatch(pa.concat_tables([b.table for b in batches]))

    @property
    def nbytes(self) -> int:
        return self.table.nbytes

    def take(self, indices: list[int]) -> LogBatch:
        return LogBatch(self.table.take(indices))

    def slice(self, start: int, stop: int) -> LogBatch:
        return LogBatch(self.table.slice(start, stop - start))
