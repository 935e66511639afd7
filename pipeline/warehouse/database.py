"""The collector's warehouse file: one DuckDB database, opened without filesystem access, its
tables and views prepared, one writer cursor and any number of reader cursors, recovered after a
failed statement and reopened when DuckDB invalidated it. Its callers serialise writes.

The file is attached with a row group size (ARCHITECTURE.md#the-warehouse): a transaction that
appends at least that many rows has them compressed straight into the file at commit, where a
smaller one is copied into the WAL first and rewritten by the next checkpoint. Every cursor is
pointed at the attached file (`USE`), so statements name its tables as before."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import duckdb

from spanpipe.warehouse.schema import ATTEMPT_SUMMARIES_KEPT, DDL, REBUILD_ATTEMPT_SUMMARIES, add_derived_columns
from spanpipe.warehouse.views import create_views, sql_string

log = logging.getLogger("spanpipe.warehouse.database")

# DuckDB errors that say the data itself cannot be stored (retrying the same rows cannot help).
DATA_ERRORS = (duckdb.ConversionException, duckdb.ConstraintException, duckdb.OutOfRangeException)

# DuckDB memory that statements hold and free when done (hash tables, sorts, results). Table data
# (cached blocks, rows not yet checkpointed) is left out: refusing spans would not shrink it, so
# counting it made the memory limiter refuse while nothing was held; `memory_limit` and
# `checkpoint_threshold` bound it.
WORKING_MEMORY_TAGS = ("HASH_TABLE", "ORDER_BY", "COLUMN_DATA", "WINDOW", "TRANSACTION")


class CannotOpen(RuntimeError):
    pass


def out_of_space(path: Path, exc: Exception) -> bool:
    if "No space left on device" in str(exc):
        return True
    try:
        return shutil.disk_usage(path.parent).free < 1024 * 1024
    except OSError:
        return False


# DuckDB's own default; the duckdb exporter sets its `row_group_size`.
DEFAULT_ROW_GROUP_SIZE = 122_880
# Catalog names DuckDB keeps for itself: a file named after one is attached under another name.
_RESERVED_CATALOGS = {"memory", "system", "temp", "main"}


def catalog_name(path: Path) -> str:
    """The name the file is attached as: its stem, as when DuckDB opens a file directly."""
    return path.stem if path.stem.lower() not in _RESERVED_CATALOGS else f"{path.stem}_warehouse"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def attach_statements(path: Path, row_group_size: int) -> tuple[str, str]:
    """The statements that attach the warehouse file at `path` under its own name with this row
    group size, and make it the database unqualified names refer to."""
    name = _identifier(catalog_name(path))
    return f"ATTACH {sql_string(str(path))} AS {name} (ROW_GROUP_SIZE {int(row_group_size)})", f"USE {name}"


class WarehouseDatabase:
    def __init__(self, path: Path, settings: dict[str, Any], name: str,
                 row_group_size: int = DEFAULT_ROW_GROUP_SIZE) -> None:
        """`settings`: DuckDB options (checkpoint_threshold, memory_limit, threads)."""
        self.path, self.name = path, name
        self.settings = dict(settings)
        self._attach, self._use = attach_statements(path, row_group_size)
        self._con: duckdb.DuckDBPyConnection | None = None
        self.writer: duckdb.DuckDBPyConnection | None = None
        self._memory, self._memory_read_at = 0, 0.0

    @property
    def is_open(self) -> bool:
        return self._con is not None

    def open(self) -> None:
        """Open the file (CannotOpen says why not) and take a writer cursor."""
        self._con = self._connect()
        self.writer = self.reader()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:", config=self.settings)
        try:
            con.execute(self._attach)
        except duckdb.Error as exc:
            con.close()
            raise CannotOpen(f"{self.name}: cannot open {self.path}: {exc}") from None
        try:
            con.execute(self._use)
            # From here no statement on this database reaches the filesystem (the query API reads
            # through it), and no query can switch that back on (lock_configuration below).
            con.execute("SET enable_external_access = false")
            for stmt in DDL:
                con.execute(stmt)
            added = add_derived_columns(con)
            if added:
                log.info("%s: added the derived column(s) %s to %s, computed for every stored span",
                         self.name, ", ".join(added), self.path)
            if not con.execute("SELECT 1 FROM spanpipe_meta WHERE key = $k", {"k": ATTEMPT_SUMMARIES_KEPT}).fetchall():
                con.execute("BEGIN")
                for stmt in REBUILD_ATTEMPT_SUMMARIES:
                    con.execute(stmt)
                con.execute("COMMIT")
            create_views(con)
            con.execute("SET lock_configuration = true")
        except duckdb.Error as exc:
            con.close()
            raise CannotOpen(f"{self.name}: cannot prepare {self.path}: {exc}") from None
        return con

    def reader(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise duckdb.ConnectionException(f"the warehouse {self.path} is not open (see the collector's log)")
        cursor = self._con.cursor()
        cursor.execute(self._use)
        return cursor

    def recover_writer(self) -> None:
        """After a failed statement: a fresh writer cursor (the failed one may hold an unfinished
        result), or, when a fatal error invalidated the database, the file reopened (the WAL has
        what was committed)."""
        if self.writer is not None:
            try:
                self.writer.close()
            except duckdb.Error:
                pass
        try:
            fresh = self.reader()
            fresh.execute("SELECT 1").fetchall()
            self.writer = fresh
            return
        except duckdb.Error:
            pass
        try:
            self._con.close()  # type: ignore[union-attr]
        except duckdb.Error:
            pass
        try:
            self._con = self._connect()
            self.writer = self.reader()
        except CannotOpen as exc:
            log.error("reopening %s failed: %s", self.path, exc)

    def working_memory(self) -> int:
        """DuckDB's working memory in bytes, read at most twice a second."""
        now = time.monotonic()
        if now - self._memory_read_at > 0.5 and self._con is not None:
            self._memory_read_at = now
            try:
                cur = self.reader()
                try:
                    self._memory = cur.execute("SELECT sum(memory_usage_bytes)::BIGINT FROM duckdb_memory() "
                                               f"WHERE tag IN {WORKING_MEMORY_TAGS}").fetchall()[0][0] or 0
                finally:
                    cur.close()
            except duckdb.Error:
                pass
        return self._memory

    def close(self) -> None:
        """Checkpoint and close."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._con is not None:
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error as exc:
                log.warning("final checkpoint of %s failed (the WAL keeps the data): %s", self.path, exc)
            self._con.close()
            self._con = None
