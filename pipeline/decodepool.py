"""Decode worker processes: OTLP trace requests decoded on every core, not only the GIL's.

Turning a request's attributes into Python values is the collector's largest cost (about 1 µs per
attribute) and one interpreter does it on one core. The decode is a pure function from request
bytes to a SpanBatch, so a pool of worker processes runs it: a receiver thread hands the bytes to
a worker and waits (without the GIL) for the batch, which comes back as Arrow arrays in one IPC
stream (spanpipe.arrowcolumn): reading it builds no Python object per span, the attribute, event
and link JSON is already encoded, and the writer stores the arrays as they are. A processor that
reads a column gets its Python values, made from the arrays when first read.
Everything stateful — the processors, rollout-affine state, the queues, the warehouse writer —
stays in the collector process, so nothing about a span depends on which worker decoded it; a
worker only computes the pure per-span parts processors offer (spanpipe.derived).

A worker that dies (OOM killer, kill -9) fails only the requests it held, with UNAVAILABLE /
503, which clients retry; the pool is rebuilt, and while its interpreters start (as at collector
start-up) requests are decoded in the receiving thread instead of waiting for them. A request is acknowledged
only after its batch is back and delivered, so nothing acknowledged depends on a worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spanpipe import derived, importguard
from spanpipe.errors import TransientError

if TYPE_CHECKING:
    from spanpipe.derived import Derivation
    from spanpipe.otlp import DecodedTraces

log = logging.getLogger("spanpipe.decodepool")


def workers_for(setting: int | str) -> int:
    """Decode workers for a `decode_workers` setting: `auto` is one per core beyond the first
    (the collector process keeps one core for the processors and the writer); 0 decodes in the
    receiving thread."""
    if setting != "auto":
        return int(setting)
    return max(len(os.sched_getaffinity(0)) - 1, 0)


def exit_when_parent_exits(parent: int) -> None:
    """A worker outlives a collector killed -9 (the pool's pipes stay open in the worker itself):
    it watches its parent and exits when the parent is gone."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


_derivations: list[Derivation] = []


def _worker_init(parent: int, derivations: list[Derivation]) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the collector drains, its workers
    # must keep decoding until it closes the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _derivations[:] = derivations
    threading.Thread(target=exit_when_parent_exits, args=(parent,), name="parent-watch", daemon=True).start()
    importguard.keep_out("pandas", "numpy")
    import spanpipe.arrowcolumn  # noqa: F401 - loaded before the first request, not during it
    import spanpipe.otlp_columns  # noqa: F401


@dataclass(slots=True)
class _Shipped:
    """A decoded request on its way back from a worker: its per-span columns as one Arrow IPC
    stream (spanpipe.arrowcolumn), read in the collector process without a Python object per span;
    the few per-request objects (resources, counts) and the derivations' results pickled."""

    columns: bytes
    exact: dict[str, dict[int, Any]]
    resources: list[Any]
    resource_index: list[int]
    nbytes: int
    rejected: int
    message: str
    derived_values: dict[str, Any]

    @staticmethod
    def pack(decoded: DecodedTraces, derived_values: dict[str, Any]) -> _Shipped:
        import pyarrow as pa

        from spanpipe.arrowcolumn import to_record_batch

        batch = decoded.batch
        record, exact = to_record_batch(batch)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, record.schema) as writer:
            writer.write_batch(record)
        return _Shipped(sink.getvalue().to_pybytes(), exact, batch.resources, batch.resource_index, batch.nbytes,
                        decoded.rejected, decoded.message, derived_values)

    def unpack(self) -> DecodedTraces:
        import pyarrow as pa

        from spanpipe.arrowcolumn import from_record_batch
        from spanpipe.otlp import DecodedTraces
        from spanpipe.spanbatch import SpanBatch

        record = pa.ipc.open_stream(self.columns).read_next_batch()
        batch = SpanBatch(**from_record_batch(record, self.exact), resource_index=self.resource_index,  # type: ignore[arg-type]
                          resources=self.resources, nbytes=self.nbytes)
        derived.bind(batch, self.derived_values)
        return DecodedTraces(batch, self.rejected, self.message)


def _decode(body: bytes, json: bool) -> _Shipped:
    from spanpipe.otlp_columns import decode_traces

    decoded = decode_traces(body, json)
    batch = decoded.batch
    values = {}
    for d in _derivations:
        try:
            values[d.key] = d.derive(batch)
        except Exception:  # noqa: BLE001 - the processor computes it itself, and reports
            log.debug("derivation %s failed in a decode worker", d.key, exc_info=True)
    return _Shipped.pack(decoded, values)


def _ready() -> int:
    return os.getpid()


class DecodePool:
    """`workers` processes decoding trace requests and computing `derivations` (those of the
    processors downstream); `decode` blocks the calling thread only."""

    def __init__(self, workers: int, name: str, derivations: list[Derivation] | None = None) -> None:
        self.workers, self.name = workers, name
        self.derivations = derivations or []
        self._lock = threading.Lock()
        self._warming: list[Future[int]] = []
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(os.getpid(), self.derivations))
        # Start the interpreters now, not on the first request.
        self._warming = [pool.submit(_ready) for _ in range(self.workers)]
        return pool

    def ready(self, timeout: float | None = None) -> bool:
        """Whether the workers are up (waiting up to `timeout` seconds for them)."""
        done, _ = wait(self._warming, timeout)
        return len(done) == len(self._warming)

    def decode(self, body: bytes, json: bool = False) -> DecodedTraces:
        if not all(f.done() for f in self._warming):
            # The workers are starting (collector start-up, or after one died): a request does
            # not wait a second for an interpreter; it is decoded here, as with decode_workers: 0.
            from spanpipe.otlp_columns import decode_traces

            return decode_traces(body, json)
        pool = self._pool
        try:
            return pool.submit(_decode, body, json).result().unpack()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    log.error("%s: a decode worker exited; starting the pool again", self.name)
                    self._pool = self._start()
                    pool.shutdown(wait=False, cancel_futures=True)
            raise TransientError(f"{self.name}: the decode worker handling this request exited; retry") from None
        except RuntimeError as exc:  # submit after shutdown: the receiver is stopping
            raise TransientError(f"{self.name}: shutting down ({exc})") from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
