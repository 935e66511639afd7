"""`spanpipe ui`: the web viewer over a warehouse file or a Parquet lake, with no collector running.

It is a query API server (`/v1/sql` and `/ui/`) over a connection that cannot touch the
filesystem beyond what it reads: a file opened read-only with external access off, or an
in-memory database whose only readable directory is the lake's.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import duckdb

from spanpipe.warehouse.query_server import QueryServer
from spanpipe.warehouse.views import create_lake_views, create_views


class CannotServe(Exception):
    pass


def file_connector(path: str | Path) -> Callable[[], duckdb.DuckDBPyConnection]:
    path = Path(path)
    if not path.exists():
        raise CannotServe(f"no warehouse at {path}")
    try:
        base = duckdb.connect(str(path), read_only=True, config={"enable_external_access": False})
    except duckdb.IOException as exc:
        raise CannotServe(f"cannot open {path}: {exc}") from None

    if not base.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'spans'").fetchall():
        raise CannotServe(f"{path} is not a spanpipe warehouse (it has no spans table)")

    def connect() -> duckdb.DuckDBPyConnection:
        cur = base.cursor()
        create_views(cur, temporary=True)  # a file written before a view existed gets it per cursor
        return cur
    connect().close()
    return connect


def lake_connector(location: str | Path) -> Callable[[], duckdb.DuckDBPyConnection]:
    root = Path(location)
    if "://" in str(location) or not root.is_dir():
        raise CannotServe(f"{location} is not a local directory (the viewer reads local lakes)")
    base = duckdb.connect()
    base.execute("SET allowed_directories = $dirs", {"dirs": [str(root.resolve()) + "/"]})
    base.execute("SET enable_external_access = false")
    create_lake_views(base, str(root.resolve()))
    base.execute("SET lock_configuration = true")
    return base.cursor


def serve(connect: Callable[[], duckdb.DuckDBPyConnection], host: str, port: int,
          stop: threading.Event, started: Callable[[str], None]) -> None:
    server = QueryServer(connect, host, port, ui=True, live_metrics=False)
    server.start()
    try:
        started(f"{server.url}/ui/")
        stop.wait()
    finally:
        server.stop()
