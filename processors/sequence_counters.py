"""The rollout processor's per-rollout sequence counters: bounded in memory, kept across restarts.

Only the `limit` rollouts that most recently had a span keep a counter of their own. A forgotten
rollout's highest id raises `floor`, and any rollout without a counter of its own counts on from
`floor`: ids stay unique and increasing within a rollout whatever was forgotten, at the price that
a rollout first seen after forgetting began starts above 1.

The state file is an append-only log, one JSON line per batch that moved a counter (`{rollout:
highest id}`) or the floor (a bare number); it is rewritten to the live state on start and
whenever the log has grown to several times that, so neither memory nor the file grows with the
number of rollouts ever seen.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import orjson

# The log is compacted once it is this many times the size of the live state (and at least
# _COMPACT_MIN_BYTES): compaction rewrites every counter.
_COMPACT_RATIO = 4
_COMPACT_MIN_BYTES = 1 << 20


class SequenceCounters:
    def __init__(self, path: str | None, limit: int) -> None:
        self.path = Path(path) if path else None
        self.limit = limit
        self.highest: OrderedDict[str, int] = OrderedDict()  # oldest first
        self.floor = 0
        self._fh: BinaryIO | None = None
        self._logged = 0
        self._compacted = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self._replay(self.path.read_bytes())
            self._compact()

    def _replay(self, log: bytes) -> None:
        for line in log.splitlines():
            try:
                entry = orjson.loads(line)
                if isinstance(entry, int):
                    self.floor = max(self.floor, entry)
                    continue
                changed = {str(k): int(v) for k, v in entry.items()}
            except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
                continue  # a torn last line after a crash
            for rollout, value in changed.items():
                changed[rollout] = max(value, self.highest.get(rollout, 0))
            self._apply(changed.keys(), changed)

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
        if self._fh is None or not entry:
            return
        line = orjson.dumps(entry) + b"\n"
        self._fh.write(line)
        self._fh.flush()
        self._logged += len(line)
        if self._logged > max(_COMPACT_RATIO * self._compacted, _COMPACT_MIN_BYTES):
            self._compact()

    def _compact(self) -> None:
        """Rewrite the file to the live state: the floor, then every counter (oldest first)."""
        assert self.path is not None
        state = orjson.dumps(self.floor) + b"\n" + orjson.dumps(self.highest) + b"\n"
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_bytes(state)
        os.replace(tmp, self.path)
        if self._fh is not None:
            self._fh.close()
        self._fh = open(self.path, "ab")
        self._compacted, self._logged = len(state), 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
