"""The `file` exporter: OTLP/JSON lines, one request per line, rotated by size. In a logs pipeline
it writes log requests (`resourceLogs`) the same way, into the same file.

```yaml
exporters:
  file:
    path: ./data/spans.jsonl
    rotation: {max_megabytes: 100, max_backups: 10}
```
A rotated file is renamed `<stem>-<UTC time><suffix>`; the oldest beyond max_backups are removed.
Lines are written whole and flushed per batch; a write that fails (disk full) is cut back off the
file, so a reader never sees half a line. The exporter helper's keys apply; its queue is off by
default (the write happens in the caller's thread, as before).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from spanpipe.logbatch import LogBatch
from spanpipe.errors import TransientError
from spanpipe.exporterhelper import ExporterHelperConfig, QueuedExporter
from spanpipe.otlp_encode import logs_to_otlp_json, to_otlp_json
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch


class RotationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_megabytes: float = Field(100, gt=0)
    max_backups: int = Field(100, ge=0)


class FileExporterConfig(ExporterHelperConfig):
    helper_defaults: ClassVar[dict[str, Any]] = {
        "sending_queue": {"enabled": False},
        "retry_on_failure": {"enabled": False},
    }

    path: str
    rotation: RotationConfig | None = None
    format: str = "json"

    def validate_config(self) -> None:
        if self.format != "json":
            raise ValueError(f"format: only 'json' (OTLP/JSON lines) is supported, got '{self.format}'")


class FileExporter(QueuedExporter):
    config: FileExporterConfig

    def __init__(self, component_id: str, config: FileExporterConfig) -> None:
        super().__init__(component_id, config)
        self.path = Path(config.path)
        self._lock = threading.Lock()
        self._fh = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def _rotate(self) -> None:
        assert self._fh is not None
        self._fh.close()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:].replace(".", "")
        rotated = self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")
        os.replace(self.path, rotated)
        keep = self.config.rotation.max_backups if self.config.rotation else 0
        backups = sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"))
        for old in backups[: max(len(backups) - keep, 0)] if keep else []:
            old.unlink(missing_ok=True)
        self._fh = open(self.path, "ab")

    def send(self, batch: SpanBatch, timeout: float) -> None:
        self._write_line(orjson.dumps(to_otlp_json(batch)) + b"\n")

    def send_logs(self, batch: LogBatch, timeout: float) -> None:
        self._write_line(orjson.dumps(logs_to_otlp_json(batch.table)) + b"\n")

    def _write_line(self, line: bytes) -> None:
        with self._lock:
            if self._fh is None:
                raise TransientError(f"{self.id}: not started")
            end = None
            try:
                rot = self.config.rotation
                if rot and self._fh.tell() and self._fh.tell() + len(line) > rot.max_megabytes * 1024 * 1024:
                    self._rotate()
                end = self._fh.tell()
                self._fh.write(line)
                self._fh.flush()
            except OSError as exc:
                self._cut_back(end)
                raise TransientError(f"{self.id}: cannot write {self.path}: {exc.strerror}") from None

    def _cut_back(self, end: int | None) -> None:
        """Drop the part of a line a failed write left, and reopen so the buffer is clean."""
        try:
            self._fh.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            if end is not None:
                os.truncate(self.path, end)
        except OSError as exc:
            self.log.error("cannot cut a partial line off %s: %s", self.path, exc)
        self._fh = open(self.path, "ab")


_create = lambda cid, cfg: FileExporter(cid, cfg)
factory = Factory("file", "exporters", FileExporterConfig, traces=_create, logs=_create)
