"""The sending queue: bounded, in memory or on disk, with batching on the way out.

Items are whole requests (SpanBatches) keyed by an increasing number. `put` refuses when
`capacity` requests are pending; `take` hands a consumer one or more pending items (merged up to
the batch limits) which stay *in flight* until `done(keys)`. On disk, an item is a file that is
removed only by `done`: whatever was pending or in flight when the process died is found again
by the next start (at-least-once).
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import pyarrow as pa

from spanpipe.atomicwrite import write_atomically
from spanpipe.logbatch import LogBatch
from spanpipe.signals import Item
from spanpipe import signals

log = logging.getLogger("spanpipe.exporterhelper.queue")


class QueueFull(Exception):
    pass


class MemoryStore:
    def __init__(self) -> None:
        self._items: dict[int, Item] = {}

    def recover(self) -> list[int]:
        return []

    def write(self, key: int, batch: Item) -> None:
        self._items[key] = batch

    def read(self, key: int) -> Item:
        return self._items[key]

    def remove(self, key: int) -> None:
        self._items.pop(key, None)

    def quarantine(self, key: int) -> str:
        self._items.pop(key, None)
        return "nowhere (memory)"

    def spans(self, key: int) -> int:
        return len(self._items[key])


class FileStore:
    """One file per request: `<seq>.<spans>.batch`, written to a temp name and renamed.

    The payload is a pickled request (SpanBatch or LogBatch): this directory is the collector's own, trusted as its
    database file is. `fsync` (otelcol file_storage's key) makes it survive a power loss as well
    as a killed process; without it the page cache is enough for `kill -9`.
    """

    SUFFIX = ".batch"
    MAGIC = b"SPQ1"  # format of what follows; a file of another format is refused by name, not unpickled

    def __init__(self, directory: Path, fsync: bool) -> None:
        self.directory, self.fsync = directory, fsync
        self.directory.mkdir(parents=True, exist_ok=True)
        self._spans: dict[int, int] = {}

    def _path(self, key: int, spans: int) -> Path:
        return self.directory / f"{key:016d}.{spans}{self.SUFFIX}"

    def recover(self) -> list[int]:
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)  # never renamed: its request was never acknowledged
        keys = []
        for path in self.directory.glob(f"*{self.SUFFIX}"):
            seq, _, spans = path.name.removesuffix(self.SUFFIX).partition(".")
            if seq.isdigit() and spans.isdigit():
                keys.append(int(seq))
                self._spans[int(seq)] = int(spans)
        return sorted(keys)

    def write(self, key: int, batch: Item) -> None:
        data = self.MAGIC + pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        write_atomically(self._path(key, len(batch)), data, self.fsync)
        self._spans[key] = len(batch)

    def read(self, key: int) -> Item:
        path = self._path(key, self._spans[key])
        data = path.read_bytes()
        if not data.startswith(self.MAGIC):
            raise ValueError(f"{path} is not a spanpipe queue file of format {self.MAGIC!r}")
        item = pickle.loads(data[len(self.MAGIC):])
        # log records queued by a version that carried them as a bare Arrow table
        return LogBatch(item) if isinstance(item, pa.Table) else item

    def quarantine(self, key: int) -> str:
        """Move an unreadable file aside (kept for a person to look at) and forget it."""
        spans = self._spans.pop(key)
        aside = self.directory / "unreadable"
        aside.mkdir(exist_ok=True)
        target = aside / self._path(key, spans).name
        os.replace(self._path(key, spans), target)
        return str(target)

    def remove(self, key: int) -> None:
        spans = self._spans.pop(key, None)
        if spans is not None:
            self._path(key, spans).unlink(missing_ok=True)

    def spans(self, key: int) -> int:
        return self._spans[key]


class SendingQueue:
    def __init__(self, capacity: int, store: MemoryStore | FileStore) -> None:
        self.capacity = capacity
        self.store = store
        self._cond = threading.Condition()
        self._take_lock = threading.Lock()
        self._pending: collections.deque[int] = collections.deque(store.recover())
        self._in_flight: set[int] = set()
        self._bytes: dict[int, int] = {}  # memory held per item: queued in memory, or read to be sent
        self.released = 0
        self._next = (self._pending[-1] + 1) if self._pending else 1
        self.recovered = len(self._pending)

    @property
    def persistent(self) -> bool:
        return isinstance(self.store, FileStore)

    def size(self) -> int:
        return len(self._pending)

    def in_flight(self) -> int:
        return len(self._in_flight)

    def held_bytes(self) -> int:
        with self._cond:
            return sum(self._bytes.values())

    def pending_spans(self) -> int:
        with self._cond:
            return sum(self.store.spans(k) for k in (*self._pending, *self._in_flight))

    def put(self, batch: Item, wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        with self._cond:
            while len(self._pending) >= self.capacity:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QueueFull
                self._cond.wait(left)
            key = self._next
            self._next += 1
            self.store.write(key, batch)  # under the lock: keys reach disk in order
            self._pending.append(key)
            if not self.persistent:
                self._bytes[key] = batch.nbytes
            self._cond.notify_all()

    def take(self, timeout: float, max_spans: int = 0, min_spans: int = 0,
             flush_timeout: float = 0.0, merge: bool = True,
             flush_now: Callable[[], bool] = lambda: False) -> tuple[list[int], Item] | None:
        """Wait up to `timeout` for an item; then (with `merge`) merge more pending ones up to
        `max_spans`, waiting up to `flush_timeout` for `min_spans` unless `flush_now()` (a drain,
        woken by `wake`). Returns (keys, merged batch) or None."""
        with self._take_lock:
            keys: list[int] = []
            spans = 0
            deadline = time.monotonic() + timeout
            flush_deadline: float | None = None
            with self._cond:
                while True:
                    while self._pending and (not keys or merge and (
                            not max_spans or spans + self.store.spans(self._pending[0]) <= max_spans)):
                        key = self._pending.popleft()
                        keys.append(key)
                        self._in_flight.add(key)
                        spans += self.store.spans(key)
                        if max_spans and spans >= max_spans:
                            break
                    full = (not merge or bool(max_spans and self._pending) or spans >= max(min_spans, 1)
                            or flush_now())
                    if keys and (full or not min_spans):
                        break
                    now = time.monotonic()
                    if keys and flush_deadline is None:
                        flush_deadline = now + flush_timeout
                    until = flush_deadline if keys else deadline
                    if until is not None and now >= until:
                        break
                    self._cond.wait(until - now if until is not None else None)
                self._cond.notify_all()  # room for producers
            if not keys:
                return None
        batches = []
        for key in keys:
            try:
                batches.append(self.store.read(key))
                with self._cond:
                    self._bytes[key] = batches[-1].nbytes
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the queue
                where = self.store.quarantine(key)
                log.error("cannot read queued request %d (%s); moved to %s, not sent", key, exc, where)
                self.done([key])
        keys = [k for k in keys if k in self._in_flight]
        if not batches:
            return None
        return keys, signals.merge(batches)

    def done(self, keys: Iterable[int]) -> None:
        with self._cond:
            for key in keys:
                self._in_flight.discard(key)
                self._bytes.pop(key, None)
                self.store.remove(key)

    def release(self, keys: Iterable[int]) -> None:
        """Give in-flight items back (left on disk for the next start), without removing them."""
        with self._cond:
            for key in keys:
                self._in_flight.discard(key)
                self._bytes.pop(key, None)
                self.released += 1

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
