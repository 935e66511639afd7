"""The `parquet` exporter: a data lake of zstd Parquet files, Hive-partitioned.

```yaml
exporters:
  parquet:
    path: ./data/lake                  # or any pyarrow filesystem URI (s3://bucket/lake, ...)
    partition_by: [date, hour]         # date, hour, a spans column, attributes.<key>, resource.<key>
    max_rows_per_file: 1000000
    sending_queue:                     # files roll by size/time through the queue's batching:
      batch: {min_size: 50000, max_size: 500000, flush_timeout: 30s}
```
The columns are the warehouse `spans` columns (spanpipe.lake). Files appear whole or not at all;
a failed write (disk full) removes what it started and is retried by the exporter helper, for
ever by default, while the pipeline's other exporters go on. `Warehouse.open_lake(path)`
queries the lake; so can DuckDB (`read_parquet('<path>/**/*.parquet', hive_partitioning=true)`),
Spark and Trino.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow.fs as pafs
from pydantic import Field

from spanpipe import lake
from spanpipe.errors import TransientError
from spanpipe.exporterhelper import ExporterHelperConfig, QueuedExporter
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch


class ParquetExporterConfig(ExporterHelperConfig):
    helper_defaults: ClassVar[dict[str, Any]] = {
        "sending_queue": {"num_consumers": 2, "queue_size": 1000,
                          "batch": {"min_size": 50000, "max_size": 500000, "flush_timeout": "30s"}},
        "retry_on_failure": {"initial_interval": "1s", "max_interval": "30s", "max_elapsed_time": "0s"},
    }

    path: str = "./data/lake"
    partition_by: list[str] = Field(default_factory=lambda: ["date", "hour"])
    max_rows_per_file: int = Field(1_000_000, gt=0)
    compression_level: int = Field(3, ge=1, le=22)

    def validate_config(self) -> None:
        if not self.path:
            raise ValueError("path: must name the lake's root directory or URI")
        lake.check_partition_keys(self.partition_by)


class ParquetExporter(QueuedExporter):
    fills_promoted_columns = True
    config: ParquetExporterConfig

    def __init__(self, component_id: str, config: ParquetExporterConfig) -> None:
        super().__init__(component_id, config)
        self._fs: pafs.FileSystem | None = None
        self._root = ""

    def open(self) -> None:
        try:
            self._fs, self._root = lake.open_filesystem(self.config.path)
            self._fs.create_dir(self._root, recursive=True)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"{self.id}: cannot use {self.config.path}: {exc}") from None

    def send(self, batch: SpanBatch, timeout: float) -> None:
        assert self._fs is not None, "exporter not started"
        try:
            files = lake.write_partitioned(batch.to_arrow(), self._fs, self._root, self.config.partition_by,
                                           self.config.max_rows_per_file, self.config.compression_level)
        except OSError as exc:
            raise TransientError(f"{self.id}: cannot write {len(batch)} spans to {self.config.path}: {exc}") from None
        self.log.debug("wrote %d spans in %d files", len(batch), len(files))


factory = Factory("parquet", "exporters", ParquetExporterConfig,
                  lambda cid, cfg: ParquetExporter(cid, cfg))
