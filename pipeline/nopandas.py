"""Keep pandas out of the collector's processes (the collector itself and its decode workers).

When pandas is installed (Ray brings it), pyarrow imports it the first time it builds an array
and DuckDB the first time it is handed a table, only to ask whether an object is a DataFrame:
~40 MiB of RSS per process that is never used, which the memory limiter would count as idle memory.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any


class _WithoutPandas(importlib.abc.MetaPathFinder):
    """Makes pandas look uninstalled."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] == "pandas":
            raise ModuleNotFoundError(f"No module named {name!r} (the collector does not load pandas)", name=name)
        return None


def install() -> None:
    """Call before pyarrow first builds an array (its pandas shim imports pandas then)."""
    if "pandas" not in sys.modules and not any(isinstance(f, _WithoutPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _WithoutPandas())
