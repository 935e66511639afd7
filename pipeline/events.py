"""The collector's event bus: typed events that components publish and anyone can subscribe to.

    from spanpipe import events
    sid = events.subscribe("rollout_completed", lambda ev: print(ev.data["rollout_id"]))
    events.unsubscribe(sid)

Each subscription has its own bounded queue and worker thread, so a slow or failing handler only
loses its own events (counted in `otelcol_events_dropped` / `otelcol_event_handler_errors`) and
never blocks the pipeline or the other subscribers. Async handlers run on the worker's own event
loop. The query API serves the same stream to other processes as Server-Sent Events
(`GET /v1/events`), which is what `Warehouse.wait_for_rollouts` listens to.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from spanpipe.telemetry import counters

log = logging.getLogger(__name__)

ANY = "*"
ROLLOUT_STARTED = "rollout_started"
ROLLOUT_COMPLETED = "rollout_completed"
REWARD_EXTRACTED = "reward_extracted"
SPANS_REFUSED = "spans_refused"
EXPORT_FAILED = "export_failed"
MEMORY_PRESSURE = "memory_pressure"
EVENT_TYPES = frozenset({ROLLOUT_STARTED, ROLLOUT_COMPLETED, REWARD_EXTRACTED, SPANS_REFUSED, EXPORT_FAILED,
                         MEMORY_PRESSURE})


@dataclass(frozen=True)
class Event:
    type: str
    data: dict[str, Any]
    time_unix_nano: int = field(default_factory=time.time_ns)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "time_unix_nano": self.time_unix_nano, "data": self.data}


Handler = Callable[[Event], Any]
_STOP = object()


class _Subscription:
    def __init__(self, sid: int, event_type: str, handler: Handler, queue_size: int) -> None:
        self.id, self.event_type, self.handler = sid, event_type, handler
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.is_async = inspect.iscoroutinefunction(handler)
        self.thread = threading.Thread(target=self._run, name=f"events-sub-{sid}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop() if self.is_async else None
        try:
            while True:
                ev = self.queue.get()
                if ev is _STOP:
                    return
                try:
                    if loop is not None:
                        loop.run_until_complete(self.handler(ev))
                    else:
                        self.handler(ev)
                except Exception:  # noqa: BLE001 - one handler's failure is its own
                    counters.add("event_handler_errors", 1, event=ev.type)
                    log.exception("event handler %s failed on %s", getattr(self.handler, "__name__", "?"), ev.type)
        finally:
            if loop is not None:
                loop.close()


class EventBus:
    def __init__(self, queue_size: int = 1024) -> None:
        self.queue_size = queue_size
        self._subs: dict[int, _Subscription] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def subscribe(self, event_type: str, handler: Handler, queue_size: int | None = None) -> int:
        if event_type != ANY and event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}; one of {sorted(EVENT_TYPES)} or ANY")
        if not callable(handler):
            raise TypeError("handler must be callable")
        with self._lock:
            sid = next(self._ids)
            self._subs[sid] = _Subscription(sid, event_type, handler, queue_size or self.queue_size)
        return sid

    def unsubscribe(self, sid: int) -> bool:
        with self._lock:
            sub = self._subs.pop(sid, None)
        if sub is None:
            return False
        try:
            sub.queue.put_nowait(_STOP)
        except queue.Full:
            _drain_and_stop(sub)
        return True

    def publish(self, event_type: str, **data: Any) -> Event:
        """Hand the event to every matching subscriber without blocking; a full queue drops it."""
        ev = Event(event_type, data)
        with self._lock:
            subs = [s for s in self._subs.values() if s.event_type in (ANY, event_type)]
        for sub in subs:
            try:
                sub.queue.put_nowait(ev)
            except queue.Full:
                counters.add("events_dropped", 1, event=event_type)
        return ev

    def subscribers(self) -> int:
        return len(self._subs)


def _drain_and_stop(sub: _Subscription) -> None:
    try:
        while True:
            sub.queue.get_nowait()
    except queue.Empty:
        pass
    sub.queue.put_nowait(_STOP)


bus = EventBus()
subscribe = bus.subscribe
unsubscribe = bus.unsubscribe
publish = bus.publish
