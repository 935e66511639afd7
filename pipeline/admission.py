"""Process-wide memory accounting and admission, so receivers can refuse data *before* decoding it.

Components that hold accepted data (the batch processor, exporter queues, the DuckDB warehouse)
report the bytes they hold (`register_buffer`); a receiver reserves the worst-case cost of
decoding a request (`decoding`) before it parses it, with at most `MAX_CONCURRENT_DECODES`
requests decoding at once. The memory_limiter processor registers itself as a gate and compares
what is held (plus the process's idle footprint) with its limits — not RSS, which allocators keep
high long after the data is gone. Memory is a property of the process, not of one pipeline, so
one gate serves all receivers.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, Protocol

from spanpipe.errors import BackPressureError, PermanentError

# What decoding a request may cost. Ordinary spans: upb's parse plus the decoded columns take
# ~4-8x the wire size. Degenerate requests — many empty sub-messages — take up to 37x (measured:
# 10 MiB of empty ResourceSpans → 340 MiB): each costs ~220 bytes and holds a zero length byte, so
# zero bytes (counted at C speed) price them.
TYPICAL_EXPANSION = 8
BYTES_PER_ZERO_BYTE = 224
WORST_EXPANSION = 40
MAX_CONCURRENT_DECODES = 2


def decode_cost(body: bytes) -> int:
    """The memory decoding `body` may take, at worst. The zero bytes are counted with numpy:
    `bytes.count(0)` took ~150 µs of the GIL per 430 KB request, numpy ~12."""
    import numpy as np  # not at import: decode workers keep numpy out

    n = len(body)
    zeros = n - int(np.count_nonzero(np.frombuffer(body, np.uint8)))
    return min(n * WORST_EXPANSION, n * TYPICAL_EXPANSION + zeros * BYTES_PER_ZERO_BYTE)


class RequestTooLargeForMemory(PermanentError):
    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 413


class Gate(Protocol):
    id: str

    def refusing(self) -> bool: ...

    def room(self) -> tuple[int, int]:
        """(bytes that may still be reserved now, bytes that could ever be reserved)."""
        ...


_gates: list[Gate] = []
_buffers: dict[str, Callable[[], int]] = {}
_caches: dict[str, Callable[[], int]] = {}
_lock = threading.Lock()
_reserved = 0
_decode_slots = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)


def register_buffer(name: str, bytes_held: Callable[[], int]) -> None:
    """A component that holds accepted data reports how many bytes it holds."""
    with _lock:
        _buffers[name] = bytes_held


def register_cache(name: str, bytes_held: Callable[[], int]) -> None:
    """Memory that counts towards the limit but that refusing data would not free (DuckDB's table
    data until its next checkpoint): it makes the limiter refuse sooner while data is held, never
    while nothing is."""
    with _lock:
        _caches[name] = bytes_held


def unregister_buffer(name: str) -> None:
    with _lock:
        _buffers.pop(name, None)
        _caches.pop(name, None)


def cache_bytes() -> int:
    with _lock:
        fns = list(_caches.values())
    return sum(fn() for fn in fns)


def held_bytes() -> int:
    """What accepted data holds now: buffers plus requests being decoded."""
    with _lock:
        fns = list(_buffers.values())
        reserved = _reserved
    return reserved + sum(fn() for fn in fns)


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


@contextlib.contextmanager
def decoding(body: bytes, timeout: float = 5.0) -> Iterator[None]:
    """Hold a decode slot and reserve the request's worst-case decoding cost while decoding.

    Without a gate nothing compares the reservation with a limit, so it is the typical cost:
    pricing the worst case counts the body's zero bytes, a pass over it with the GIL held (5% of
    the collector process's time under flat-out load)."""
    global _reserved
    with _lock:
        gates = list(_gates)
    request_bytes = len(body)
    need = decode_cost(body) if gates else request_bytes * TYPICAL_EXPANSION
    for gate in gates:
        now, ever = gate.room()
        if need > ever:
            raise RequestTooLargeForMemory(
                f"{gate.id}: a request of {request_bytes / 2**20:.1f} MiB may take {need / 2**20:.0f} MiB to "
                f"decode, more than the memory limit allows; send smaller requests")
        if need > now:
            raise BackPressureError(f"{gate.id}: not enough memory to decode a request of "
                                    f"{request_bytes / 2**20:.1f} MiB now; retry later")
    if not _decode_slots.acquire(timeout=timeout):
        raise BackPressureError("too many requests decoding at once; retry later")
    with _lock:
        _reserved += need
    try:
        yield
    finally:
        with _lock:
            _reserved -= need
        _decode_slots.release()
