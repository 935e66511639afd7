"""Keep packages a process never uses out of it (the collector and its decode workers).

When pandas is installed (Ray brings it), pyarrow imports it the first time it builds an array
and DuckDB the first time it is handed a table, only to ask whether an object is a DataFrame:
~40 MiB of RSS per process that is never used, which the memory limiter would count as idle memory.
A decode worker keeps numpy out too: pyarrow imports it when present (11 MiB of RSS per worker),
and a worker only builds arrays from Python lists and writes Arrow IPC, which need no numpy.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any


class _Without(importlib.abc.MetaPathFinder):
    """Makes `packages` look uninstalled."""

    def __init__(self, packages: frozenset[str]) -> None:
        self.packages = packages

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in self.packages:
            raise ModuleNotFoundError(f"No module named {name!r} (this spanpipe process does not load it)", name=name)
        return None


def keep_out(*packages: str) -> None:
    """Call before pyarrow is first imported (it imports numpy then) or first builds an array
    (its pandas shim imports pandas then). A package already imported stays."""
    wanted = frozenset(p for p in packages if p not in sys.modules)
    kept = set().union(*(f.packages for f in sys.meta_path if isinstance(f, _Without)))
    if wanted - kept:
        sys.meta_path.insert(0, _Without(frozenset(wanted - kept)))
