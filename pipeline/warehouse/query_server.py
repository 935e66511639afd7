"""The collector's read-only query API: `POST /v1/sql` over the warehouse it owns.

DuckDB allows one writing process, so while a collector runs, other processes read through here.
Request: a JSON body `{"sql": "...", "format": "arrow"|"json"}` or the SQL as text/plain.
Response: Arrow IPC stream (`application/vnd.apache.arrow.stream`, the default for `Accept`
naming it or format=arrow) or a JSON array of objects. Refused queries get 403 with a message.
"""

from __future__ import annotations

import logging
from typing import Callable

import duckdb
import orjson
import pyarrow as pa
from aiohttp import web

from pipeline.httpserver import HttpServer
from pipeline.warehouse.readonly import QueryRefused, check_read_only

log = logging.getLogger("spanpipe.query")

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def arrow_to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def arrow_to_json(table: pa.Table) -> bytes:
    return orjson.dumps(table.to_pylist(), default=str)


class QueryServer:
    def __init__(self, connect: Callable[[], duckdb.DuckDBPyConnection], host: str, port: int,
                 max_rows: int = 5_000_000) -> None:
        self._connect = connect
        self.max_rows = max_rows
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/v1/sql", self._sql)
        self.server = HttpServer(app, host, port, "query-api", workers=2, shutdown_timeout=10)

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}"

    def start(self) -> None:
        self.server.start()
        log.info("query API listening on %s/v1/sql", self.url)

    def stop(self) -> None:
        self.server.stop()

    def run_query(self, sql: str) -> pa.Table:
        con = self._connect()
        try:
            readable = {r[0].lower() for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "UNION SELECT view_name FROM duckdb_views() WHERE NOT internal "
                "AND database_name = current_database()").fetchall()}
            check_read_only(con, sql, readable)
            reader = con.sql(sql).to_arrow_reader(batch_size=65536)
            batches, rows = [], 0
            for b in reader:
                rows += b.num_rows
                if rows > self.max_rows:
                    raise QueryRefused(f"result larger than {self.max_rows} rows; add a LIMIT "
                                       "or aggregate")
                batches.append(b)
            return pa.Table.from_batches(batches, schema=reader.schema)
        finally:
            con.close()

    async def _sql(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.json_response({"error": "use POST /v1/sql"}, status=405)
        body = await request.read()
        fmt = request.query.get("format", "")
        if request.content_type == "application/json":
            try:
                doc = orjson.loads(body)
                sql, fmt = doc["sql"], doc.get("format", fmt)
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return web.json_response({"error": 'body must be {"sql": "...", "format": ...}'}, status=400)
        else:
            sql = body.decode("utf-8", "replace")
        if not fmt:
            fmt = "arrow" if ARROW_STREAM in request.headers.get("Accept", "") else "json"
        if fmt not in ("arrow", "json"):
            return web.json_response({"error": f"unknown format '{fmt}' (arrow or json)"}, status=400)
        try:
            table = await self.server.run_blocking(self.run_query, sql)
            if fmt == "arrow":
                return web.Response(body=await self.server.run_blocking(arrow_to_ipc, table),
                                    content_type=ARROW_STREAM)
            return web.Response(body=await self.server.run_blocking(arrow_to_json, table),
                                content_type="application/json")
        except QueryRefused as exc:
            return web.json_response({"error": str(exc)}, status=403)
        except duckdb.Error as exc:
            return web.json_response({"error": str(exc)}, status=400)
