"""Replacing a file's contents whole: a reader, or a restart after a crash, sees the old contents or
the new, never part of them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomically(path: Path, data: bytes, fsync: bool = False) -> None:
    """Write `data` to `path` through `<path>.tmp` and a rename; on an error the temporary file is
    removed and the error raised. `fsync`: the data is on disk before the rename."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
