"""Process-wide admission gate, so receivers can refuse data *before* decoding it.

The memory_limiter processor registers itself here; a receiver asks `check()` before it parses
a request and answers with a retryable refusal when memory is short. Memory is a property of the
process, not of one pipeline, so one gate serves all receivers.
"""

from __future__ import annotations

import threading
from typing import Callable, Protocol

from pipeline.errors import BackPressureError


class Gate(Protocol):
    id: str

    def refusing(self) -> bool: ...


_gates: list[Gate] = []
_buffers: dict[str, Callable[[], int]] = {}
_lock = threading.Lock()


def register_buffer(name: str, spans_held: Callable[[], int]) -> None:
    """A component that holds accepted spans (batch processor, exporter queues) reports how many."""
    with _lock:
        _buffers[name] = spans_held


def unregister_buffer(name: str) -> None:
    with _lock:
        _buffers.pop(name, None)


def buffered_spans() -> int:
    with _lock:
        fns = list(_buffers.values())
    return sum(fn() for fn in fns)


def register(gate: Gate) -> None:
    with _lock:
        _gates.append(gate)


def unregister(gate: Gate) -> None:
    with _lock:
        if gate in _gates:
            _gates.remove(gate)


def check() -> None:
    for gate in _gates:
        if gate.refusing():
            raise BackPressureError(f"{gate.id}: memory usage is above the soft limit; retry later")
