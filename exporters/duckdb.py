"""The `duckdb` exporter: the span warehouse, one DuckDB file written by one writer thread.

```yaml
exporters:
  duckdb:
    path: ./data/spans.duckdb
    query: {endpoint: 127.0.0.1:4319}   # the read-only query API; `query: {enabled: false}` turns it off
```
The exporter helper queues what the pipeline sends (bounded: a full queue is a retryable refusal;
`sending_queue::storage` puts it on disk). One sender merges what is queued, converts it to Arrow
once and inserts it with one deduplicating `INSERT … SELECT` (a retried export never shows twice),
so an at-least-once persistent queue is exactly-once visible. A failed insert (disk full, I/O
error) is retried for ever by default: the queue fills and receivers refuse with a retryable code
meanwhile. On shutdown the queue is drained into the file before it is checkpointed and closed.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from spanpipe.logbatch import LogBatch
from spanpipe.extensions.bearertokenauth import AuthSettings
from spanpipe import admission, lake
from spanpipe.configtypes import Duration, Endpoint, parse_endpoint
from spanpipe.periodic import Periodic
from spanpipe.procmem import MIB
from spanpipe.component import Authenticator
from spanpipe.completion import Completion, completion_batch
from spanpipe.errors import PipelineError, TransientError, UnwritableDataError
from spanpipe.exporterhelper import ExporterHelperConfig, QueuedExporter
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters, gauges
from spanpipe.warehouse import payloads
from spanpipe.warehouse.database import DATA_ERRORS, CannotOpen, WarehouseDatabase, out_of_space
from spanpipe.warehouse.query_server import QueryServer
from spanpipe import events
from spanpipe.warehouse.schema import (INSERT_COMPLETIONS, INSERT_DEDUPED, INSERT_LATE_REWARDS, INSERT_LOGS,
                                       INSERT_NEW_REWARD_DIMENSIONS, INSERT_REWARD_DIMENSIONS,
                                       RECOUNT_ATTEMPT_SUMMARIES, ROLLOUT_SPAN, upsert_attempt_summaries)
from spanpipe.warehouse.retention import Archive, apply_retention

class QueryApiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
    # An empty `query:` section means these defaults, as everywhere in the config; `enabled: false` turns it off.
    enabled: bool = True
    endpoint: Endpoint = "127.0.0.1:4319"
    max_rows: int = Field(5_000_000, gt=0)
    max_result_size_mib: int = Field(256, gt=0, description="Arrow bytes of one result")
    timeout: Duration = Field("30s", description="a query running longer is interrupted")  # type: ignore[assignment]
    workers: int = Field(4, ge=1, le=64, description="queries running at once")
    auth: AuthSettings | None = None
    ui: bool = Field(True, description="serve the web viewer under /ui/ on this address")


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
        # Two queued requests keep the writer fed: with four it held ~20 MiB more and ran no faster
        # (bench/README.md, 2026-12-06 sixth session). Both are merged into one transaction even
        # when the batch processor's flushes are a little over 8,192 spans, so that under load a
        # transaction fills at least one `row_group_size` row group (bench/README.md, 2026-12-07).
        "sending_queue": {"num_consumers": 1, "queue_size": 2, "block_on_overflow": True,
                          "batch": {"max_size": 32768, "flush_timeout": "0s"}},
        "retry_on_failure": {"initial_interval": "100ms", "max_interval": "10s", "max_elapsed_time": "0s"},
    }

    path: str = "./data/spans.duckdb"
    query: QueryApiConfig | None = Field(default_factory=QueryApiConfig)
    # Rows not yet checkpointed stay in memory (~this size again); 128MB inserts as fast as 256MB
    # and far faster than DuckDB's 16MB default (bench/README.md).
    checkpoint_threshold: str = "128MB"
    # DuckDB defaults to 80% of RAM; a collector must stay bounded. With the compiled decoder the
    # writer, not the CPU, bounds flat-out ingest, and 128MB costs it ~5% against 192MB for a
    # ~55 MiB lower peak (bench/README.md, 2026-12-06 sixth session).
    memory_limit: str | None = "128MB"
    threads: int | None = Field(None, ge=1)
    # A transaction of at least this many rows is compressed straight into the file at commit
    # instead of being copied to the WAL and rewritten at the next checkpoint: under load, when
    # the queued requests merge into one transaction, that halves the writer's cost per span, for
    # a file ~30% larger than with DuckDB's 122,880 (bench/README.md, 2026-12-07).
    row_group_size: int = Field(16384, ge=2048, description="rows; a multiple of 2048")
    retention: RetentionConfig | None = None

    def validate_config(self) -> None:
        if not self.path:
            raise ValueError("path: must name the database file")
        if self.row_group_size % 2048:
            raise ValueError(f"row_group_size: must be a multiple of 2048 (DuckDB's vector size), "
                             f"got {self.row_group_size}")
        sizes = {key: value for key in ("checkpoint_threshold", "memory_limit")
                 if (value := getattr(self, key)) is not None}
        for key, value in sizes.items():
            if value.strip().startswith("-"):
                raise ValueError(f"{key}: must not be negative, got '{value}'")
        if not sizes or _refusal(sizes) is None:  # one connection for both (~20 ms each)
            return
        for key, value in sizes.items():  # which one it refused
            if (why := _refusal({key: value})) is not None:
                raise ValueError(f"{key}: '{value}' is not a size DuckDB accepts (e.g. 512MB, 2GiB): {why}")

    def extension_refs(self) -> dict[str, str]:
        refs = super().extension_refs()
        if self.query is not None and self.query.enabled and self.query.auth is not None:
            refs["query::auth::authenticator"] = self.query.auth.authenticator
        return refs


_UPSERT_SUMMARIES = upsert_attempt_summaries("__batch")


def first_of_each_span(table: pa.Table) -> pa.Table:
    """`table` with each (trace_id, span_id) once, its first row kept (a client's retry merged into
    the same batch as the first attempt). Counting distinct span ids is cheap, and when none repeats
    no pair can (under load ~0.3 µs per span less than joining the ids first); pairs are counted
    only when a span id repeats, and rows taken only when a pair does."""
    if pc.count_distinct(table.column("span_id")).as_py() == table.num_rows:
        return table
    keys = pc.binary_join_element_wise(table.column("trace_id"), table.column("span_id"), "/")
    if pc.count_distinct(keys).as_py() == table.num_rows:
        return table
    rows = pa.table({"key": keys, "row": pa.array(range(table.num_rows), pa.int64())})
    first = rows.group_by("key", use_threads=False).aggregate([("row", "min")]).column("row_min")
    return table.take(pc.take(first, pc.sort_indices(first)))


def _refusal(settings: dict[str, str]) -> str | None:
    """DuckDB's own parser on these settings (at validate time rather than at run): why it refuses
    them, or None."""
    try:
        duckdb.connect(":memory:", config=settings).close()
        return None
    except duckdb.Error as exc:
        return str(exc)


def endpoint_file(db_path: str | Path) -> Path:
    return Path(f"{db_path}.endpoint")


class DuckDBExporter(QueuedExporter):
    fills_promoted_columns = True
    config: DuckDBExporterConfig

    def __init__(self, component_id: str, config: DuckDBExporterConfig) -> None:
        super().__init__(component_id, config)
        self.path = Path(config.path)
        settings: dict[str, Any] = {"checkpoint_threshold": config.checkpoint_threshold}
        if config.memory_limit:
            settings["memory_limit"] = config.memory_limit
        if config.threads:
            settings["threads"] = str(config.threads)
        self.db = WarehouseDatabase(self.path, settings, component_id, config.row_group_size)
        self._write_lock = threading.Lock()  # one writer: inserts, payloads, retention
        self._closed = False
        self._rows = 0
        self.query_server: QueryServer | None = None
        self._retention: Periodic | None = None
        self._indexer: payloads.PayloadIndexer | None = None

    # lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connect()
        except CannotOpen as exc:
            if not out_of_space(self.path, exc):
                raise
            # Start anyway: what arrives is queued (then refused, retryably, once the queue is
            # full) and the sender opens the file when space returns.
            self.log.error("%s; writing starts when space returns", exc)
        gauges.set_function("warehouse_rows", lambda: self._rows, exporter=self.id)
        admission.register_cache(f"exporter/{self.id}/duckdb", self.db.working_memory)
        if self.config.query is not None and self.config.query.enabled:
            host, port = parse_endpoint(self.config.query.endpoint)
            auth = self.config.query.auth
            authenticate = self.host.extension_as(auth.authenticator, Authenticator).authenticate if auth else None
            q = self.config.query
            self.query_server = QueryServer(self.db.reader, host, port, q.max_rows, authenticate,
                                            timeout=q.timeout, max_result_bytes=q.max_result_size_mib * MIB,
                                            workers=q.workers, complete_rollout=self.complete_rollout,
                                            ui=q.ui, live_metrics=True)
            self.query_server.start()
            if q.ui:
                self.log.info("web viewer on %s/ui/", self.query_server.url)
            try:
                endpoint_file(self.path).write_text(self.query_server.url + "\n")
            except OSError as exc:
                self.log.error("cannot write %s (%s): `spanpipe sql --db` will need --endpoint %s",
                               endpoint_file(self.path), exc, self.query_server.url)
        if self.config.retention is not None:
            self._retention = Periodic(f"{self.id}-retention", self.config.retention.check_interval,
                                       self.apply_retention, self.log)
            self._retention.start()

    def complete_rollout(self, rollout_id: str, failed: bool) -> tuple[int, dict[str, Any]]:
        """`POST /v1/rollouts/{id}/complete`: store a rollout span for the rollout's latest attempt
        (`spanpipe.completion`), through this exporter's queue like any span."""
        con = self.db.reader()
        try:
            latest = con.execute(
                "SELECT attempt_id, arg_max(trace_id, start_time_unix_nano), min(start_time_unix_nano), "
                "max(end_time_unix_nano), bool_or(name = $name) FROM spans WHERE rollout_id = $rid "
                "GROUP BY attempt_id ORDER BY min(start_time_unix_nano) DESC LIMIT 1",
                {"rid": rollout_id, "name": ROLLOUT_SPAN}).fetchall()
        finally:
            con.close()
        if not latest:
            return 404, {"error": f"no span of rollout {rollout_id!r} is stored"}
        attempt_id, trace_id, start, end, done = latest[0]
        if done:
            return 200, {"rollout_id": rollout_id, "attempt_id": attempt_id, "completed": "already"}
        batch = completion_batch([Completion(rollout_id, attempt_id, trace_id, start, end, failed, "api")])
        batch = batch.with_columns(rollout_id=[rollout_id], attempt_id=[attempt_id], sequence_id=[None],
                                   span_type=["rollout"], reward=[None], response_id=[None])
        try:
            self.consume(batch)
        except PipelineError as exc:
            return exc.http_status, {"error": str(exc)}
        return 202, {"rollout_id": rollout_id, "attempt_id": attempt_id,
                     "status": "failed" if failed else "succeeded"}

    def _connect(self) -> None:
        self.db.open()
        self._rows = self.db.reader().execute("SELECT count(*) FROM spans").fetchall()[0][0]
        self._indexer = payloads.PayloadIndexer(self.id, self._busy, self._write_payloads)

    def _busy(self) -> bool:
        return any(q.size() > 0 or q.in_flight() > 0 for q in self.queues.values())

    def _write_payloads(self, table: pa.Table) -> None:
        with self._write_lock:
            if self.db.writer is None:
                return
            try:
                payloads.insert_payload_table(self.db.writer, table)
            except duckdb.Error as exc:  # the reader computes what is not stored
                self.log.warning("storing %d triplet payloads failed: %s", table.num_rows, exc)

    def shutdown(self) -> None:
        admission.unregister_buffer(f"exporter/{self.id}/duckdb")
        if self._retention is not None:
            self._retention.stop()
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
        with self._write_lock:
            self.db.close()

    def apply_retention(self) -> tuple[int, int]:
        """One retention pass now (the retention thread calls it every check_interval)."""
        cfg = self.config.retention
        assert cfg is not None
        archive = None
        if cfg.archive_path:
            fs, root = lake.open_filesystem(cfg.archive_path)
            archive = Archive(fs, root, cfg.archive_partition_by)
        with self._write_lock:
            writer = self.db.writer
            if writer is None:
                return 0, 0
            units, spans = apply_retention(writer, cfg.max_age, cfg.max_rows, archive)
            if spans:
                self._rows -= spans
                writer.execute("CHECKPOINT")
        if spans:
            counters.add("exporter_retention_deleted_spans", spans, exporter=self.id)
            if archive is not None:
                counters.add("exporter_retention_archived_spans", spans, exporter=self.id)
            self.log.info("retention: removed %d rollouts/traces (%d spans)%s", units, spans,
                          f", archived to {cfg.archive_path}" if archive else "")
        return units, spans

    # data path ------------------------------------------------------------------------------
    def send(self, batch: SpanBatch, timeout: float) -> None:
        try:
            table = first_of_each_span(batch.to_arrow())
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            raise UnwritableDataError(f"{self.id}: {len(batch)} spans cannot be converted: {exc}") from None
        with self._write_lock:
            writer = self._usable_writer()
            try:
                self._insert(writer, batch, table)
            except DATA_ERRORS as exc:
                raise UnwritableDataError(f"{self.id}: {len(batch)} spans cannot be stored: {exc}") from None
            except duckdb.Error as exc:
                self.db.recover_writer()
                raise TransientError(f"{self.id}: insert of {len(batch)} spans into {self.path} failed: "
                                     f"{exc}") from None

    def send_logs(self, batch: LogBatch, timeout: float) -> None:
        table = batch.table
        bounds = pc.min_max(table.column("time_unix_nano")).as_py()
        with self._write_lock:
            writer = self._usable_writer()
            writer.register("__logs", table)
            try:
                writer.execute(INSERT_LOGS, {"lo": bounds["min"], "hi": bounds["max"]})
            except DATA_ERRORS as exc:
                raise UnwritableDataError(f"{self.id}: {table.num_rows} log records cannot be stored: {exc}") from None
            except duckdb.Error as exc:
                self.db.recover_writer()
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
        if not self.db.is_open:
            try:
                self._connect()
            except CannotOpen as exc:
                raise TransientError(str(exc)) from None
            self.log.info("opened %s; writing", self.path)
        assert self.db.writer is not None
        return self.db.writer

    def _insert(self, writer: duckdb.DuckDBPyConnection, batch: SpanBatch, table: pa.Table) -> None:
        bounds = pc.min_max(table.column("start_time_unix_nano")).as_py()
        starts = {"lo": bounds["min"], "hi": bounds["max"]}
        dims = batch.reward_dimensions_arrow()
        writer.register("__batch", table)
        if dims is not None:
            writer.register("__dims", dims)
        try:
            writer.execute("BEGIN")
            inserted = writer.execute(INSERT_DEDUPED, starts).fetchall()
            all_new = bool(inserted) and inserted[0][0] == table.num_rows
            if dims is not None:
                writer.execute(INSERT_REWARD_DIMENSIONS if all_new else INSERT_NEW_REWARD_DIMENSIONS)
            if all_new:
                writer.execute(_UPSERT_SUMMARIES)
            else:  # spans already stored were left out: count the batch's rollouts again
                for stmt in RECOUNT_ATTEMPT_SUMMARIES:
                    writer.execute(stmt)
            late = writer.execute(INSERT_LATE_REWARDS).fetchall() if "reward" in batch.extra.get("span_type", ()) else []
            completed = writer.execute(INSERT_COMPLETIONS, starts).fetchall() if ROLLOUT_SPAN in batch.name else []
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
        for seq, rollout_id, attempt_id, status, mode, final_reward in late:
            events.publish(events.ROLLOUT_COMPLETED, seq=seq, rollout_id=rollout_id, attempt_id=attempt_id,
                           status=status, mode=mode, final_reward=final_reward, late_reward=True)
        for seq, rollout_id, attempt_id, status, mode, final_reward in completed:
            events.publish(events.ROLLOUT_COMPLETED, seq=seq, rollout_id=rollout_id, attempt_id=attempt_id,
                           status=status, mode=mode, final_reward=final_reward)


_create = lambda cid, cfg: DuckDBExporter(cid, cfg)
factory = Factory("duckdb", "exporters", DuckDBExporterConfig, traces=_create, logs=_create)
