"""The rollout processor's per-rollout sequence counters: bounded in memory, kept across restarts.

Only the `limit` rollouts that most recently had a span keep a counter of their own. A forgotten
rollout's highest id raises `floor`, and any rollout without a counter of its own counts on from
`floor`: ids stay unique and increasing within a rollout whatever was forgotten, at the price that
a rollout first seen after forgetting began starts above 1.

The state file is an append-only log, one JSON line per batch that moved a counter (`{rollout:
highest id}`) or the floor (a bare number); it is rewritten to the live state on start and
whenever the log has grown to several times that, so neither memory nor the file grows with the
number of rollouts ever seen. A file that cannot be written (a full disk) does not stop the
pipeline: the counters live on in memory, the error is logged, and the whole state is written once
it can be (tried again at most once a second). A collector stopped before that restarts from the
file's last state and may issue again ids issued meanwhile.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import orjson

from spanpipe.atomicwrite import write_atomically

# The log is compacted once it is this many times the size of the live state (and at least
# _COMPACT_MIN_BYTES): compaction rewrites every counter.
_COMPACT_RATIO = 4
_COMPACT_MIN_BYTES = 1 << 20
_RETRY_SECONDS = 1.0


class SequenceCounters:
    def __init__(self, path: str | None, limit: int, log: logging.Logger) -> None:
        self.path = Path(path) if path else None
        self.limit = limit
        self.log = log
        self.highest: OrderedDict[str, int] = OrderedDict()  # oldest first
        self.floor = 0
        self._fh: BinaryIO | None = None
        self._logged = 0
        self._compacted = 0
        self._failing_since: float | None = None  # the file could not be written; retried after
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self._replay(self.path.read_bytes())
            try:
                self._write_state()
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise  # a path that cannot work (a directory, no permission): the config is wrong
                self._failed(exc)

    def _replay(self, log: bytes) -> None:
        for line in log.splitlines():
            try:
                entry = orjson.loads(line)
                if isinstance(entry, int):
                    self.floor = max(self.floor, entry)
                    continue
                changed = {str(k): int(v) for k, v in entry.items()}
            except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
                continue  # a torn line: a crash, or a full disk
            self._apply(changed.keys(), changed)  # a rollout's highest id only rises from line to line

    def last(self, rollouts: Iterable[str]) -> dict[str, int]:
        """The highest id issued or given in each of `rollouts` (their ids continue above it)."""
        get, floor = self.highest.get, self.floor
        return {r: get(r, floor) for r in rollouts}

    def advance(self, rollouts: Iterable[str], changed: dict[str, int]) -> None:
        """A batch's rollouts (`rollouts`) had spans, `changed` their new highest ids: they become
        the most recent; the oldest beyond `limit` are forgotten."""
        floor = self.floor
        self._apply(rollouts, changed)
        self._log(changed)
        if self.floor != floor:
            self._log(self.floor)

    def _apply(self, rollouts: Iterable[str], changed: dict[str, int]) -> None:
        highest = self.highest
        for r in rollouts:
            if r in highest:
                highest.move_to_end(r)
        highest.update(changed)  # a rollout in `changed` is in `rollouts`: already moved
        for _ in range(len(highest) - self.limit):
            self.floor = max(self.floor, highest.popitem(last=False)[1])

    def _log(self, entry: dict[str, int] | int) -> None:
        if self.path is None or not entry:
            return
        if self._fh is None:  # a write failed: the whole state goes in once it can
            if time.monotonic() - (self._failing_since or 0.0) >= _RETRY_SECONDS:
                self._compact()
            return
        line = orjson.dumps(entry) + b"\n"
        try:
            rest = memoryview(line)
            while rest:  # a short write, then the error that stopped it
                rest = rest[self._fh.write(rest):]
        except OSError as exc:
            self._failed(exc)
            return
        self._logged += len(line)
        if self._logged > max(_COMPACT_RATIO * self._compacted, _COMPACT_MIN_BYTES):
            self._compact()

    def _compact(self) -> None:
        try:
            self._write_state()
        except OSError as exc:
            self._failed(exc)
            return
        if self._failing_since is not None:
            self._failing_since = None
            self.log.info("sequence counters written to %s again", self.path)

    def _write_state(self) -> None:
        """Rewrite the file to the live state: the floor, then every counter (oldest first)."""
        assert self.path is not None
        self._close_file()
        state = orjson.dumps(self.floor) + b"\n" + orjson.dumps(self.highest) + b"\n"
        write_atomically(self.path, state)
        self._fh = open(self.path, "ab", buffering=0)
        self._compacted, self._logged = len(state), 0

    def _failed(self, exc: OSError) -> None:
        self._close_file()
        if self._failing_since is None:
            self.log.error("cannot write the sequence counters to %s (%s): they are kept in memory and "
                           "written when it can be; a restart before that may issue ids again", self.path, exc)
        self._failing_since = time.monotonic()

    def close(self) -> None:
        """At shutdown: a state that could not be written is tried once more."""
        if self._failing_since is not None:
            self._compact()
        self._close_file()

    def _close_file(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError:
                pass
