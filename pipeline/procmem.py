"""The process's memory: RSS, the machine's (or cgroup's) total, handing freed heap back, and how
often Python's garbage collector runs in a long-running process."""

from __future__ import annotations

import ctypes
import gc
import os

import pyarrow as pa

MIB = 1024 * 1024

# A running collector allocates containers fast (each request's columns and its derivations' lists)
# that live until their batch is written. At CPython's default first-generation threshold (700) a
# collection ran every ~2 ms under load and walked those live lists each time: 1.1 s of GIL-held
# time per 15 s (rl-training, ~55k spans/s, 350 collections). At 20,000: ~0.1 s. Cyclic garbage is
# still collected, and the memory_limiter collects whenever the process is over its limit.
FIRST_GENERATION_THRESHOLD = 20_000


def total_memory() -> int:
    """The cgroup memory limit if there is one, else physical memory."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _load_malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _load_malloc_trim()


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS.

    Python's allocator keeps freed memory mapped, so RSS would stay above the limit after the
    data that pushed it there is long gone, and the limiter would refuse forever.
    """
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed blocks too


def collect_garbage_less_often() -> None:
    """For a long-running collector once its pipeline is built, and a decode worker once it has
    loaded: what start-up made (modules, config, components) is frozen out of every collection,
    and the first generation is collected after FIRST_GENERATION_THRESHOLD allocations, not 700."""
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, second, third)


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
