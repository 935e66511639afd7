"""Rollout completion for agents that never send an `agentlightning.rollout` span (any language, any
instrumentation): a rollout is complete once a root span of it has arrived (OTel exports a span
when it ends, so its traces' roots have ended) and no span of it has arrived for `idle_timeout`.
Its status is `failed` when a root span has status ERROR, else `succeeded`.

The rollout processor then sends one `agentlightning.rollout` span of its own down the pipeline
(attribute `spanpipe.rollout.completed_by: idle_timeout`), so completions, events, cursors and the
lake work exactly as for a rollout span the agent sent. A rollout that sends its own rollout span
is never completed here.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from spanpipe.completion import Completion, completion_batch
from spanpipe.emit.rollout import ROLLOUT_SPAN
from spanpipe.spanbatch import STATUS_ERROR, SpanBatch


@dataclass
class Seen:
    attempt_id: str | None
    trace_id: str
    first_start: int
    last_end: int
    last_arrival: float
    root_seen: bool = False
    root_failed: bool = False


class IdleRollouts:
    """What the rollout processor has seen of each rollout still open (bounded, oldest forgotten)."""

    def __init__(self, idle_timeout: float, max_rollouts: int, rollout_key: str, attempt_key: str) -> None:
        self.idle_timeout, self.max_rollouts = idle_timeout, max_rollouts
        self.rollout_key, self.attempt_key = rollout_key, attempt_key
        self.open: OrderedDict[str, Seen] = OrderedDict()
        self.closed: OrderedDict[str, None] = OrderedDict()  # completed by a rollout span or by us
        self._lock = threading.Lock()

    def observe(self, batch: SpanBatch, rollouts: list[str | None], attempts: list[str | None]) -> None:
        """Per batch, work per rollout and per root span, not per span (this is on the hot path):
        a rollout's arrival and latest attempt, its roots' trace, times and status."""
        now = time.monotonic()
        last = dict(zip(rollouts, range(len(rollouts))))  # each rollout's last span in the batch
        last.pop(None, None)
        roots = [i for i, parent in enumerate(batch.parent_span_id) if parent is None]
        finished = {rollouts[i] for i, name in enumerate(batch.name) if name == ROLLOUT_SPAN} \
            if ROLLOUT_SPAN in batch.name else set()
        with self._lock:
            for rollout, i in last.items():
                if rollout in self.closed:
                    continue
                if rollout in finished:
                    self._close(rollout)
                    continue
                seen = self.open.get(rollout)
                if seen is None:
                    self.open[rollout] = Seen(attempts[i], batch.trace_id[i], batch.start_time_unix_nano[i],
                                              batch.end_time_unix_nano[i], now)
                    if len(self.open) > self.max_rollouts:
                        self.open.popitem(last=False)
                else:
                    self.open.move_to_end(rollout)
                    seen.last_arrival = now
                    if attempts[i] is not None:
                        seen.attempt_id = attempts[i]
            for i in roots:
                seen = self.open.get(rollouts[i]) if rollouts[i] is not None else None
                if seen is not None:  # a root spans its trace: its times bound the rollout's
                    seen.root_seen = True
                    seen.trace_id = batch.trace_id[i]
                    seen.root_failed = seen.root_failed or batch.status_code[i] == STATUS_ERROR
                    seen.first_start = min(seen.first_start, batch.start_time_unix_nano[i])
                    seen.last_end = max(seen.last_end, batch.end_time_unix_nano[i])

    def _close(self, rollout: str) -> None:
        self.open.pop(rollout, None)
        self.closed[rollout] = None
        if len(self.closed) > self.max_rollouts:
            self.closed.popitem(last=False)

    def due(self) -> list[tuple[str, Seen]]:
        """Rollouts idle for `idle_timeout` with a root span seen (not yet closed: `completed` does)."""
        cutoff = time.monotonic() - self.idle_timeout
        with self._lock:
            return [(r, s) for r, s in self.open.items() if s.root_seen and s.last_arrival <= cutoff]

    def completed(self, rollouts: list[str]) -> None:
        with self._lock:
            for r in rollouts:
                self._close(r)

    def completion_batch(self, due: list[tuple[str, Seen]]) -> SpanBatch:
        """One `agentlightning.rollout` span per due rollout, in its (last root's) trace."""
        return completion_batch([Completion(r, s.attempt_id, s.trace_id, s.first_start, s.last_end, s.root_failed,
                                            "idle_timeout") for r, s in due], self.rollout_key, self.attempt_key)
