"""The algorithm's API over several backend collectors (`Warehouse.connect([url1, url2, …])`): the
load-balancing tier puts each rollout whole on one backend, so per-rollout results are each
backend's results put together.

Cursors are one per backend, carried as one opaque string (`"fed:3,0,12"`) that `since=` takes
back. `sql` answers from one backend (`backend=`, default 0) and says which in `.last_backend`.
`wait_for_rollouts` waits on every backend at once and merges what they report.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

import pyarrow as pa

if TYPE_CHECKING:
    from spanpipe.adapters.messages import Messages
    from spanpipe.adapters.trajectories import Trajectories
    from spanpipe.adapters.triplet_types import Triplets
    from spanpipe.warehouse.warehouse import Warehouse

T = TypeVar("T")
PREFIX = "fed:"


def encode_cursor(cursors: list[int | None]) -> str:
    return PREFIX + ",".join("" if c is None else str(c) for c in cursors)


def decode_cursor(cursor: Any, n: int) -> list[int | None]:
    """`since=` for each backend: a federation cursor, or one number for all (0 = everything)."""
    if cursor is None:
        return [None] * n
    if isinstance(cursor, str) and cursor.startswith(PREFIX):
        parts = cursor[len(PREFIX):].split(",")
        if len(parts) != n:
            raise ValueError(f"this cursor is for {len(parts)} backends, not {n}")
        return [int(p) if p else None for p in parts]
    return [int(cursor)] * n


class Federation:
    def __init__(self, backends: list[Warehouse]) -> None:
        if not backends:
            raise ValueError("give at least one backend URL")
        self.backends = backends
        self.last_backend: int | None = None
        self._pool = ThreadPoolExecutor(max_workers=len(backends), thread_name_prefix="federation")

    def _each(self, fn: Callable[[Warehouse, int], T]) -> list[T]:
        return list(self._pool.map(lambda pair: fn(*pair), [(wh, k) for k, wh in enumerate(self.backends)]))

    def sql(self, query: str, backend: int = 0) -> pa.Table:
        self.last_backend = backend
        return self.backends[backend].sql(query)

    def rollouts(self, rollout_ids: Iterable[str] | None = None, status: str | None = None) -> pa.Table:
        ids = None if rollout_ids is None else list(rollout_ids)
        tables = self._each(lambda wh, k: wh.rollouts(ids, status=status))
        return pa.concat_tables(tables, promote_options="default").sort_by("start_time_unix_nano")

    def completed_rollouts(self, rollout_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(rollout_ids)
        merged: dict[str, dict[str, Any]] = {}
        for part in self._each(lambda wh, k: wh.completed_rollouts(ids)):
            merged.update(part)
        return merged

    def wait_for_rollouts(self, rollout_ids: Iterable[str], timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """Return when every rollout has completed on whichever backend holds it, or at `timeout`
        with those that have: one `rollout_completed` event stream per backend, merged."""
        from spanpipe.warehouse.warehouse import EventStream

        wanted = set(rollout_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        arrivals: queue.Queue[dict[str, Any]] = queue.Queue()
        stop = threading.Event()
        streams = [EventStream(wh.url, ["rollout_completed"], wh._token) for wh in self.backends if wh.url]

        def listen(stream: EventStream) -> None:
            try:
                while not stop.is_set():
                    ev = stream.next(None)  # a read that timed out would end the stream: block instead
                    if ev is None:
                        return
                    arrivals.put(ev["data"])
            except (OSError, ValueError, AttributeError):
                return  # closed by the caller below

        listeners = [threading.Thread(target=listen, args=(s,), daemon=True) for s in streams]
        for t in listeners:
            t.start()
        try:
            done = self.completed_rollouts(wanted)  # after subscribing: nothing falls between
            while wanted - done.keys():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    data = dict(arrivals.get(timeout=remaining))
                except queue.Empty:
                    break
                if data.get("rollout_id") in wanted:
                    done[data.pop("rollout_id")] = data
        finally:
            stop.set()
            for stream in streams:
                stream.close()
        return done

    def _gather(self, method: str, rollout_ids: Iterable[str] | None, since: Any, mode: str | None,
                options: dict[str, Any]) -> tuple[list[Any], str]:
        """Every backend's `method(ids, since=its cursor, mode=…)`, and the merged cursor."""
        ids = None if rollout_ids is None else list(rollout_ids)
        since_each = decode_cursor(since, len(self.backends))
        parts = self._each(lambda wh, k: getattr(wh, method)(ids, since=since_each[k], mode=mode, **options))
        cursors = [p.cursor if p.cursor is not None else s for p, s in zip(parts, since_each)]
        return parts, encode_cursor(cursors)

    def triplets(self, rollout_ids: Iterable[str] | None = None, since: Any = None, mode: str | None = None,
                 **options: Any) -> Triplets:
        from spanpipe.adapters.triplet_types import Triplets

        parts, cursor = self._gather("triplets", rollout_ids, since, mode, options)
        table = pa.concat_tables([p.to_arrow() for p in parts])
        return Triplets(table=table, reasons=_reasons(parts, table.column("rollout_id").to_pylist()),
                        cursor=cursor)  # type: ignore[arg-type]

    def messages(self, rollout_ids: Iterable[str] | None = None, since: Any = None, mode: str | None = None,
                 **options: Any) -> Messages:
        from spanpipe.adapters.messages import Messages

        parts, cursor = self._gather("messages", rollout_ids, since, mode, options)
        records = [m for p in parts for m in p]
        out = Messages(_reasons(parts, [m["rollout_id"] for m in records]), cursor)  # type: ignore[arg-type]
        out.extend(records)
        return out

    def trajectories(self, rollout_ids: Iterable[str] | None = None, since: Any = None, mode: str | None = None,
                     **options: Any) -> Trajectories:
        from spanpipe.adapters.trajectories import Trajectories

        parts, cursor = self._gather("trajectories", rollout_ids, since, mode, options)
        table = pa.concat_tables([p.table for p in parts])
        return Trajectories(table, pa.concat_tables([p.breaks for p in parts]),
                            _reasons(parts, table.column("rollout_id").to_pylist()), cursor)  # type: ignore[arg-type]

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reasons(parts: list[Any], produced: list[str]) -> dict[str, str]:
    """A rollout has no result only if no backend gave one; a backend that simply does not hold an
    asked-for rollout ("no spans stored") gives way to one that says more."""
    have = set(produced)
    reasons: dict[str, str] = {}
    for p in parts:
        for rid, why in p.reasons.items():
            if rid not in have and (rid not in reasons or reasons[rid].startswith("no spans stored")):
                reasons[rid] = why
    return reasons
