"""The `duckdb` exporter: the span warehouse, one DuckDB file written by one writer thread.

```yaml
exporters:
  duckdb:
    path: ./data/spans.duckdb
    query: {endpoint: 127.0.0.1:4319}   # the read-only query API; `query: null` turns it off
```
The exporter helper queues what the pipeline sends (bounded: a full queue is a retryable refusal;
`sending_queue::storage` puts it on disk). One sender merges what is queued, converts it to Arrow
once and inserts it with one deduplicating `INSERT … SELECT` (a retried export never shows twice),
so an at-least-once persistent queue is exactly-once visible. A failed insert (disk full, I/O
error) is retried for ever by default: the queue fills and receivers refuse with a retryable code
meanwhile. On shutdown the queue is drained into the file before it is checkpointed and closed.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from spanpipe.extensions.bearertokenauth import AuthSettings
from spanpipe import admission, lake
from spanpipe.configtypes import Duration, Endpoint, parse_endpoint
from spanpipe.procmem import MIB
from spanpipe.component import Authenticator
from spanpipe.errors import TransientError, UnwritableDataError
from spanpipe.exporterhelper import ExporterHelperConfig, QueuedExporter
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters, gauges
from spanpipe.warehouse import payloads
from spanpipe.warehouse.query_server import QueryServer
from spanpipe import events
from spanpipe.warehouse.schema import (DDL, INSERT_COMPLETIONS, INSERT_DEDUPED, INSERT_LOGS, INSERT_REWARD_DIMENSIONS,
                                       ROLLOUT_SPAN)
from spanpipe.warehouse.retention import Archive, apply_retention
from spanpipe.warehouse.views import create_views

class QueryApiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
    endpoint: Endpoint = "127.0.0.1:4319"
    max_rows: int = Field(5_000_000, gt=0)
    max_result_size_mib: int = Field(256, gt=0, description="Arrow bytes of one result")
    timeout: Duration = Field("30s", description="a query running longer is interrupted")  # type: ignore[assignment]
    workers: int = Field(4, ge=1, le=64, description="queries running at once")
    auth: AuthSettings | None = None


class RetentionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
    max_age: Duration = Field(0.0, description="0 = keep for ever")  # type: ignore[assignment]
    max_rows: int = Field(0, ge=0, description="0 = no limit")
    check_interval: Duration = "5m"  # type: ignore[assignment]
    archive_path: str | None = Field(None, description="a Parquet lake to copy deleted rollouts to")
    archive_partition_by: list[str] = Field(default_factory=lambda: ["date", "hour"])

    @model_validator(mode="after")
    def _check(self) -> RetentionConfig:
        if not self.max_age and not self.max_rows:
            raise ValueError("set max_age and/or max_rows")
        if self.check_interval <= 0:
            raise ValueError("check_interval must be positive")
        lake.check_partition_keys(self.archive_partition_by)
        return self


class DuckDBExporterConfig(ExporterHelperConfig):
    # One writer per file and signal, merging queued requests; the local warehouse is never given up on.
    helper_defaults: ClassVar[dict[str, Any]] = {
        "sending_queue": {"num_consumers": 1, "queue_size": 8, "block_on_overflow": True,
                          "batch": {"max_size": 32768, "flush_timeout": "0s"}},
        "retry_on_failure": {"initial_interval": "100ms", "max_interval": "10s", "max_elapsed_time": "0s"},
    }

    path: str = "./data/spans.duckdb"
    query: QueryApiConfig | None = Field(default_factory=QueryApiConfig)
    # 256MB measured ~1.7x faster than DuckDB's 16MB default for Arrow inserts (bench/README.md).
    checkpoint_threshold: str = "256MB"
    # DuckDB defaults to 80% of RAM; a collector must stay bounded (bench: no loss of speed at 256MB).
    memory_limit: str | None = "512MB"
    threads: int | None = Field(None, ge=1)
    retention: RetentionConfig | None = None

    def validate_config(self) -> None:
        if not self.path:
            raise ValueError("path: must name the database file")
        for key in ("checkpoint_threshold", "memory_limit"):
            value = getattr(self, key)
            if value is None:
                continue
            if value.strip().startswith("-"):
                raise ValueError(f"{key}: must not be negative, got '{value}'")
            try:  # DuckDB's own parser decides what it accepts, at validate time rather than at run
                duckdb.connect(":memory:", config={key: value}).close()
            except duckdb.Error as exc:
                raise ValueError(f"{key}: '{value}' is not a size DuckDB accepts (e.g. 512MB, 2GiB): "
                                 f"{exc}") from None

    def extension_refs(self) -> dict[str, str]:
        refs = super().extension_refs()
        if self.query is not None and self.query.auth is not None:
            refs["query::auth::authenticator"] = self.query.auth.authenticator
        return refs


# DuckDB errors that say the data itself cannot be stored (retrying the same rows cannot help).
DATA_ERRORS = (duckdb.ConversionException, duckdb.ConstraintException, duckdb.OutOfRangeException)


# DuckDB memory that statements hold and free when done (hash tables, sorts, results). Table data
# (cached blocks, rows not yet checkpointed) is left out: refusing spans would not shrink it, so
# counting it made the limiter refuse while nothing was held; `memory_limit` and
# `checkpoint_threshold` bound it.
WORKING_MEMORY_TAGS = ("HASH_TABLE", "ORDER_BY", "COLUMN_DATA", "WINDOW", "TRANSACTION")


def _out_of_space(path: Path, exc: Exception) -> bool:
    if "No space left on device" in str(exc):
        return True
    try:
        return shutil.disk_usage(path.parent).free < 1024 * 1024
    except OSError:
        return False


def endpoint_file(db_path: str | Path) -> Path:
    return Path(f"{db_path}.endpoint")


class DuckDBExporter(QueuedExporter):
    config: DuckDBExporterConfig

    def __init__(self, component_id: str, config: DuckDBExporterConfig) -> None:
        super().__init__(component_id, config)
        self.path = Path(config.path)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._writer: duckdb.DuckDBPyConnection | None = None
        self._write_lock = threading.Lock()
        self._closed = False
        self._memory, self._memory_read_at = 0, 0.0
        self._rows = 0
        self.query_server: QueryServer | None = None
        self._retention_stop = threading.Event()
        self._retention_thread: threading.Thread | None = None
        self._indexer: payloads.PayloadIndexer | None = None

    # lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connect()
        except RuntimeError as exc:
            if not _out_of_space(self.path, exc):
                raise
            # Start anyway: what arrives is queued (then refused, retryably, once the queue is
            # full) and the sender opens the file when space returns.
            self.log.error("%s; writing starts when space returns", exc)
        gauges.set_function("warehouse_rows", lambda: self._rows, exporter=self.id)
        admission.register_cache(f"exporter/{self.id}/duckdb", self._duckdb_memory)
        if self.config.query is not None:
            host, port = parse_endpoint(self.config.query.endpoint)
            auth = self.config.query.auth
            authenticate = self.host.extension_as(auth.authenticator, Authenticator).authenticate if auth else None
            q = self.config.query
            self.query_server = QueryServer(self._reader, host, port, q.max_rows, authenticate,
                                            timeout=q.timeout, max_result_bytes=q.max_result_size_mib * MIB,
                                            workers=q.workers)
            self.query_server.start()
            try:
                endpoint_file(self.path).write_text(self.query_server.url + "\n")
            except OSError as exc:
                self.log.error("cannot write %s (%s): `spanpipe sql --db` will need --endpoint %s",
                               endpoint_file(self.path), exc, self.query_server.url)
        if self.config.retention is not None:
            self._retention_thread = threading.Thread(target=self._retention_loop, name=f"{self.id}-retention",
                                                      daemon=True)
            self._retention_thread.start()

    def _connect(self) -> None:
        self._con = self._open()
        self._writer = self._con.cursor()
        self._rows = self._con.execute("SELECT count(*) FROM spans").fetchall()[0][0]
        self._indexer = payloads.PayloadIndexer(self.id, self._busy, self._write_payloads)

    def _open(self) -> duckdb.DuckDBPyConnection:
        # No statement on this database reaches the filesystem (the query API reads through it),
        # and no query can switch that back on.
        settings: dict[str, Any] = {"checkpoint_threshold": self.config.checkpoint_threshold,
                                    "enable_external_access": False}
        if self.config.memory_limit:
            settings["memory_limit"] = self.config.memory_limit
        if self.config.threads:
            settings["threads"] = str(self.config.threads)
        try:
            con = duckdb.connect(str(self.path), config=settings)
        except duckdb.IOException as exc:
            raise RuntimeError(f"{self.id}: cannot open {self.path}: {exc}") from None
        try:
            for stmt in DDL:
                con.execute(stmt)
            create_views(con)
            con.execute("SET lock_configuration = true")
        except duckdb.Error as exc:
            con.close()
            raise RuntimeError(f"{self.id}: cannot prepare {self.path}: {exc}") from None
        return con

    def _reader(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise duckdb.ConnectionException(f"the warehouse {self.path} is not open (see the collector's log)")
        return self._con.cursor()

    def _busy(self) -> bool:
        return any(q.size() > 0 or q.in_flight() > 0 for q in self.queues.values())

    def _write_payloads(self, table: pa.Table) -> None:
        with self._write_lock:
            if self._writer is None:
                return
            try:
                payloads.insert_payload_table(self._writer, table)
            except duckdb.Error as exc:  # the reader computes what is not stored
                self.log.warning("storing %d triplet payloads failed: %s", table.num_rows, exc)

    def _duckdb_memory(self) -> int:
        """DuckDB's working memory, read at most twice a second, for the memory limiter."""
        now = time.monotonic()
        if now - self._memory_read_at > 0.5 and self._con is not None:
            self._memory_read_at = now
            try:
                cur = self._con.cursor()
                try:
                    self._memory = cur.execute("SELECT sum(memory_usage_bytes)::BIGINT FROM duckdb_memory() "
                                               f"WHERE tag IN {WORKING_MEMORY_TAGS}"
                                               ).fetchall()[0][0] or 0
                finally:
                    cur.close()
            except duckdb.Error:
                pass
        return self._memory

    def shutdown(self) -> None:
        admission.unregister_buffer(f"exporter/{self.id}/duckdb")
        self._retention_stop.set()
        if self._retention_thread is not None:
            self._retention_thread.join()
        if self.query_server is not None:
            self.query_server.stop()
            endpoint_file(self.path).unlink(missing_ok=True)
            self.query_server = None
        super().shutdown()

    def close(self) -> None:
        self._closed = True
        if self._indexer is not None:
            self._indexer.stop()  # what it had not done is computed by readers
            self._indexer = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._con is not None:
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error as exc:
                self.log.warning("final checkpoint failed (the WAL keeps the data): %s", exc)
            self._con.close()
            self._con = None

    def apply_retention(self) -> tuple[int, int]:
        """One retention pass now (the retention thread calls it every check_interval)."""
        cfg = self.config.retention
        assert cfg is not None
        archive = None
        if cfg.archive_path:
            fs, root = lake.open_filesystem(cfg.archive_path)
            archive = Archive(fs, root, cfg.archive_partition_by)
        with self._write_lock:
            if self._writer is None:
                return 0, 0
            units, spans = apply_retention(self._writer, cfg.max_age, cfg.max_rows, archive)
            if spans:
                self._rows -= spans
                self._writer.execute("CHECKPOINT")
        if spans:
            counters.add("exporter_retention_deleted_spans", spans, exporter=self.id)
            if archive is not None:
                counters.add("exporter_retention_archived_spans", spans, exporter=self.id)
            self.log.info("retention: removed %d rollouts/traces (%d spans)%s", units, spans,
                          f", archived to {cfg.archive_path}" if archive else "")
        return units, spans

    def _retention_loop(self) -> None:
        assert self.config.retention is not None
        while not self._retention_stop.wait(self.config.retention.check_interval):
            try:
                self.apply_retention()
            except (duckdb.Error, OSError) as exc:
                self.log.error("retention pass failed (retried at the next interval): %s", exc)

    # data path ------------------------------------------------------------------------------
    def send(self, batch: SpanBatch, timeout: float) -> None:
        try:
            table = batch.to_arrow()
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            raise UnwritableDataError(f"{self.id}: {len(batch)} spans cannot be converted: {exc}") from None
        with self._write_lock:
            writer = self._usable_writer()
            try:
                self._insert(writer, batch, table)
            except DATA_ERRORS as exc:
                raise UnwritableDataError(f"{self.id}: {len(batch)} spans cannot be stored: {exc}") from None
            except duckdb.Error as exc:
                self._writer = self._reconnect(writer)
                raise TransientError(f"{self.id}: insert of {len(batch)} spans into {self.path} failed: "
                                     f"{exc}") from None

    def send_logs(self, table: pa.Table, timeout: float) -> None:
        bounds = pc.min_max(table.column("time_unix_nano")).as_py()
        with self._write_lock:
            writer = self._usable_writer()
            writer.register("__logs", table)
            try:
                writer.execute(INSERT_LOGS, {"lo": bounds["min"], "hi": bounds["max"]})
            except DATA_ERRORS as exc:
                raise UnwritableDataError(f"{self.id}: {table.num_rows} log records cannot be stored: {exc}") from None
            except duckdb.Error as exc:
                self._writer = self._reconnect(writer)
                raise TransientError(f"{self.id}: insert of {table.num_rows} log records into {self.path} "
                                     f"failed: {exc}") from None
            finally:
                try:
                    writer.unregister("__logs")
                except duckdb.Error:
                    pass

    def _usable_writer(self) -> duckdb.DuckDBPyConnection:
        """The writer cursor, opening the file first if it could not be opened yet (full disk)."""
        if self._closed:
            raise TransientError(f"{self.id}: the warehouse is closed")
        if self._writer is None:
            try:
                self._connect()
            except RuntimeError as exc:
                raise TransientError(str(exc)) from None
            self.log.info("opened %s; writing", self.path)
        assert self._writer is not None
        return self._writer

    def _reconnect(self, writer: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """A usable writer after a failed statement: a fresh cursor (the failed one may hold an
        unfinished result), or, when the database was invalidated, a reopened file."""
        try:
            writer.close()
        except duckdb.Error:
            pass
        try:
            fresh = self._con.cursor()  # type: ignore[union-attr]
            fresh.execute("SELECT 1").fetchall()
            return fresh
        except duckdb.Error:
            pass
        # A fatal error invalidates the database instance: reopen it (the WAL has what was committed).
        try:
            self._con.close()  # type: ignore[union-attr]
        except duckdb.Error:
            pass
        try:
            self._con = self._open()
            return self._con.cursor()
        except Exception as exc:  # noqa: BLE001
            self.log.error("reopening %s failed: %s", self.path, exc)
            return writer

    def _insert(self, writer: duckdb.DuckDBPyConnection, batch: SpanBatch, table: pa.Table) -> None:
        starts = table.column("start_time_unix_nano")
        bounds = pc.min_max(starts).as_py()
        dims = batch.reward_dimensions_arrow()
        writer.register("__batch", table)
        if dims is not None:
            writer.register("__dims", dims)
        try:
            writer.execute("BEGIN")
            inserted = writer.execute(INSERT_DEDUPED, {"lo": bounds["min"], "hi": bounds["max"]}).fetchall()
            if dims is not None:
                writer.execute(INSERT_REWARD_DIMENSIONS)
            completed = writer.execute(INSERT_COMPLETIONS).fetchall() if ROLLOUT_SPAN in batch.name else []
            writer.execute("COMMIT")
        except duckdb.Error:
            try:
                writer.execute("ROLLBACK")
            except duckdb.Error:
                pass
            raise
        finally:
            writer.unregister("__batch")
            if dims is not None:
                writer.unregister("__dims")
        self._rows += inserted[0][0] if inserted else 0
        if self._indexer is not None:
            self._indexer.submit(table)
        counters.add("rollouts_completed", len(completed), exporter=self.id)
        for seq, rollout_id, attempt_id, status, mode, final_reward in completed:
            events.publish(events.ROLLOUT_COMPLETED, seq=seq, rollout_id=rollout_id, attempt_id=attempt_id,
                           status=status, mode=mode, final_reward=final_reward)


factory = Factory("duckdb", "exporters", DuckDBExporterConfig,
                  lambda cid, cfg: DuckDBExporter(cid, cfg), signals=("traces", "logs"))
