"""The collector's read-only query API: `POST /v1/sql` over the warehouse it owns.

DuckDB allows one writing process, so while a collector runs, other processes read through here.
Request: a JSON body `{"sql": "...", "format": "arrow"|"json"}` or the SQL as text/plain.
Response: Arrow IPC stream (`application/vnd.apache.arrow.stream`, the default for `Accept`
naming it or format=arrow) or a JSON array of objects. Refused queries get 403 with a message.

`GET /v1/events[?type=rollout_completed&type=...]` streams the collector's event bus as
Server-Sent Events (`event: <type>` / `data: <json>`); the first line, `: subscribed`, tells the
client its subscription is live (so it can then check what already happened without a gap).

A query runs on its own cursor and is interrupted (DuckDB's `interrupt`) when it outlives
`timeout` (408), when its client disconnects, or when the collector drains; its result is capped
in rows and bytes (413). The database itself has no filesystem access (see the duckdb exporter).

The web viewer (`spanpipe.ui`) is served under `/ui/` on the same server and behind the same token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, TypeVar

import duckdb
import orjson
import pyarrow as pa
from aiohttp import web

from spanpipe import events
from spanpipe.httpserver import HttpServer
from spanpipe.telemetry import counters
from spanpipe.warehouse.readonly import QueryRefused, check_read_only
from spanpipe.warehouse.source import ARROW_STREAM


T = TypeVar("T")


class QueryInterrupted(Exception):
    pass

log = logging.getLogger("spanpipe.query")


def arrow_to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def arrow_to_json(table: pa.Table) -> bytes:
    return orjson.dumps(table.to_pylist(), default=str)


class QueryTooLarge(QueryRefused):
    pass


# The adapters' statements name the rollouts they read inline (10,000 ids are ~0.4 MB of SQL);
# aiohttp's own 1 MiB default refused a pull of ~25,000 rollouts.
MAX_REQUEST_BYTES = 16 * 1024 * 1024


class Query:
    """One running query: its cursor, so that another thread can interrupt it, and why it was."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.stopped_because: str | None = None

    def interrupt(self, why: str) -> None:
        if self.stopped_because is None:
            self.stopped_because = why
        self.con.interrupt()


class QueryServer:
    def __init__(self, connect: Callable[[], duckdb.DuckDBPyConnection], host: str, port: int,
                 max_rows: int = 5_000_000, authenticate: Callable[[str | None], bool] | None = None,
                 timeout: float = 30.0, max_result_bytes: int = 256 * 1024 * 1024, workers: int = 4,
                 complete_rollout: Callable[[str, bool], tuple[int, dict[str, Any]]] | None = None,
                 ui: bool = True, live_metrics: bool = False) -> None:
        self._connect = connect
        self.max_rows = max_rows
        self.timeout = timeout
        self.max_result_bytes = max_result_bytes
        self._running: set[Query] = set()
        self._running_lock = threading.Lock()
        self.authenticate = authenticate
        app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[self._auth])
        self.viewer = None
        if ui:
            from spanpipe.ui.routes import WebViewer  # the viewer reads through the adapters, which import us

            self.viewer = WebViewer(self, live_metrics)
            self.viewer.add_routes(app)
        app.router.add_route("*", "/v1/sql", self._sql)
        app.router.add_get("/v1/events", self._events)
        self._complete_rollout = complete_rollout
        if complete_rollout is not None:
            app.router.add_post("/v1/rollouts/{rollout_id}/complete", self._complete)
        self.streams: set[asyncio.Queue[events.Event | None]] = set()
        self.server = HttpServer(app, host, port, "query-api", workers=workers, shutdown_timeout=10)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        in_viewer = self.viewer is not None and request.path.startswith("/ui")
        if self.authenticate is not None and not (in_viewer and self.viewer.is_public(request.path)):
            credentials = request.headers.get("Authorization")
            if credentials is None and in_viewer:
                credentials = self.viewer.cookie_credentials(request)
            if not self.authenticate(credentials):
                if in_viewer:
                    return self.viewer.refuse(request)
                return web.json_response({"error": "missing or wrong bearer token (401)"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        if not in_viewer:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.viewer.secure(exc)
            raise
        self.viewer.secure(response)
        return response

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}"

    def start(self) -> None:
        self.server.start()
        log.info("query API listening on %s/v1/sql", self.url)

    def stop(self) -> None:
        def close_streams() -> None:
            for q in list(self.streams):
                q.put_nowait(None)
        self.server.loop.call_soon_threadsafe(close_streams)
        with self._running_lock:
            for query in self._running:
                query.interrupt("the collector is shutting down")
        self.server.stop()

    def start_query(self) -> Query:
        query = Query(self._connect())
        with self._running_lock:
            self._running.add(query)
        return query

    def finish_query(self, query: Query) -> None:
        with self._running_lock:
            self._running.discard(query)
        query.con.close()

    def run_query(self, sql: str, query: Query | None = None) -> pa.Table:
        """Run `sql` read-only; `query` (from start_query) lets another thread interrupt it."""
        own = query is None
        query = query or self.start_query()
        con = query.con
        timer = threading.Timer(self.timeout, query.interrupt, (f"it ran longer than {self.timeout:g} s",))
        timer.daemon = True
        timer.start()
        try:
            readable = {r[0].lower() for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "UNION SELECT view_name FROM duckdb_views() WHERE NOT internal "
                "AND database_name = current_database()").fetchall()}
            check_read_only(con, sql, readable)
            reader = con.sql(sql).to_arrow_reader(batch_size=8192)
            batches, rows, size = [], 0, 0
            for b in reader:
                rows += b.num_rows
                size += b.nbytes
                if rows > self.max_rows:
                    raise QueryTooLarge(f"result larger than {self.max_rows} rows; add a LIMIT or aggregate")
                if size > self.max_result_bytes:
                    raise QueryTooLarge(f"result larger than {self.max_result_bytes // (1024 * 1024)} MiB; "
                                        "select fewer columns or rows")
                batches.append(b)
            return pa.Table.from_batches(batches, schema=reader.schema)
        except (duckdb.InterruptException, OSError, pa.ArrowException):
            if query.stopped_because is None:  # an Arrow stream error of its own
                raise
            raise QueryInterrupted(f"query interrupted: {query.stopped_because or 'cancelled'}") from None
        finally:
            timer.cancel()
            if own:
                self.finish_query(query)

    async def run_trusted(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(cursor, *args)` in the pool, for SQL of our own (the viewer's pages): the same
        timeout and shutdown interrupts as a client's query, without the read-only check."""
        def run() -> T:
            query = self.start_query()
            timer = threading.Timer(self.timeout, query.interrupt, (f"it ran longer than {self.timeout:g} s",))
            timer.daemon = True
            timer.start()
            try:
                return fn(query.con, *args)
            except duckdb.InterruptException:
                raise QueryInterrupted(f"query interrupted: {query.stopped_because or 'cancelled'}") from None
            finally:
                timer.cancel()
                self.finish_query(query)
        return await self.server.run_blocking(run)

    async def run_console(self, request: web.Request, sql: str) -> pa.Table:
        """A client's SQL, checked and capped as `POST /v1/sql` does."""
        query = self.start_query()
        try:
            return await self._until_done_or_gone(request, query, self.run_query, sql, query)
        finally:
            self.finish_query(query)

    @staticmethod
    def error_response(exc: Exception) -> web.Response:
        """The status a failed query answers with; anything else is raised on."""
        for kind, status in ((QueryInterrupted, 408), (QueryTooLarge, 413), (QueryRefused, 403),
                             ((duckdb.Error, OSError, pa.ArrowException), 400)):
            if isinstance(exc, kind):
                return web.json_response({"error": str(exc)}, status=status)
        raise exc

    async def _complete(self, request: web.Request) -> web.Response:
        """The one write the API takes: complete a rollout (optional body {"status": "failed"})."""
        body = await request.read()
        status = "succeeded"
        if body.strip():
            try:
                status = orjson.loads(body).get("status", status)
            except (orjson.JSONDecodeError, AttributeError):
                return web.json_response({"error": 'body must be {"status": "succeeded" | "failed"}'}, status=400)
        if status not in ("succeeded", "failed"):
            return web.json_response({"error": f"status must be succeeded or failed, got {status!r}"}, status=400)
        assert self._complete_rollout is not None
        code, result = await self.server.run_blocking(self._complete_rollout, request.match_info["rollout_id"],
                                                      status == "failed")
        return web.json_response(result, status=code)

    async def _sql(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.json_response({"error": "use POST /v1/sql"}, status=405)
        body = await request.read()
        fmt = request.query.get("format", "")
        # JSON by shape too: `curl -d '{"sql": ...}'` sends it as a form, and SQL never starts with "{".
        if request.content_type == "application/json" or body.lstrip()[:1] == b"{":
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
            table = await self.run_console(request, sql)
            if fmt == "arrow":
                return web.Response(body=await self.server.run_blocking(arrow_to_ipc, table),
                                    content_type=ARROW_STREAM)
            return web.Response(body=await self.server.run_blocking(arrow_to_json, table),
                                content_type="application/json")
        except Exception as exc:  # noqa: BLE001 — mapped to its status, or raised on
            return self.error_response(exc)

    async def _until_done_or_gone(self, request: web.Request, query: Query, fn: Callable[..., Any],
                                  *args: Any) -> Any:
        """Run the query in the pool; interrupt it if the client goes away meanwhile."""
        fut = asyncio.ensure_future(self.server.run_blocking(fn, *args))
        while True:
            done, _ = await asyncio.wait({fut}, timeout=0.25)
            if done:
                return fut.result()
            transport = request.transport
            if transport is None or transport.is_closing():
                query.interrupt("the client disconnected")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        types = request.query.getall("type", []) or [events.ANY]
        unknown = [t for t in types if t != events.ANY and t not in events.EVENT_TYPES]
        if unknown:
            return web.json_response({"error": f"unknown event type(s) {unknown}; known: "
                                      f"{sorted(events.EVENT_TYPES)}"}, status=400)
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[events.Event | None] = asyncio.Queue(maxsize=10_000)

        def put(ev: events.Event) -> None:
            if q.full():
                counters.add("events_dropped", 1, event=ev.type)
            else:
                q.put_nowait(ev)

        sids = [events.subscribe(t, lambda ev: loop.call_soon_threadsafe(put, ev)) for t in types]
        self.streams.add(q)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await resp.prepare(request)
            await resp.write(b": subscribed\n\n")
            while True:
                try:
                    ev = await asyncio.wait_for(q.get(), 15)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                if ev is None:
                    break
                await resp.write(b"event: " + ev.type.encode() + b"\ndata: " + orjson.dumps(ev.to_dict()) + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams.discard(q)
            for sid in sids:
                events.unsubscribe(sid)
        return resp
