"""Writing spans straight into a warehouse file, without a collector (benchmarks, tests, imports):
the same rows the duckdb exporter writes, payloads included."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from spanpipe.warehouse.database import attach_statements
from spanpipe.warehouse.payloads import insert_payloads
from spanpipe.warehouse.schema import DDL, DERIVED_NAMES, DERIVED_SELECT, SPANS_COLUMNS, add_derived_columns
from spanpipe.warehouse.views import create_views


def create_warehouse(path: str, row_group_size: int | None = None) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse file at `path`, its tables and views created; with
    `row_group_size`, attached with it (as the duckdb exporter attaches its file)."""
    if row_group_size is None:
        con = duckdb.connect(path)
    else:
        con = duckdb.connect(":memory:")
        for stmt in attach_statements(Path(path), row_group_size):
            con.execute(stmt)
    for stmt in DDL:
        con.execute(stmt)
    add_derived_columns(con)
    create_views(con)
    return con


def insert_spans(con: duckdb.DuckDBPyConnection, table: pa.Table) -> int:
    """Insert a `spans`-shaped table (missing columns are NULL) and its LLM spans' payloads; the
    derived columns are computed as the duckdb exporter computes them."""
    names = [c for c, _ in SPANS_COLUMNS]
    select = ", ".join(c if c in table.column_names else f"NULL::{sql.split()[0]} AS {c}"
                       for c, sql in SPANS_COLUMNS)
    con.register("__spans", table)
    try:
        con.execute(f"INSERT INTO spans ({', '.join(names)}, {DERIVED_NAMES}) "
                    f"SELECT *, {DERIVED_SELECT} FROM (SELECT {select} FROM __spans)")
    finally:
        con.unregister("__spans")
    insert_payloads(con, table)
    return table.num_rows
