"""The web viewer's HTTP side: pages, their JSON, the live overview and the SQL console.

Mounted under `/ui/` on a query API server (`QueryServer`), so it reads through the same
read-only cursors, limits and refusals, and sits behind the same bearer token. A browser cannot
send a bearer header when it follows a link, so `/ui/login` takes the token once and keeps it in
an HttpOnly, SameSite=Strict cookie that the server accepts under `/ui/` only (never for the
one write the query API takes).

Every page is the same small HTML shell naming its script; the scripts build the page from the
JSON with `textContent` only (LLM content is untrusted), and the Content-Security-Policy forbids
inline script and any origin but ours.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar
from urllib.parse import quote

import duckdb
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from aiohttp import web

from spanpipe.telemetry import counters, gauges
from spanpipe.ui import queries

if TYPE_CHECKING:
    from spanpipe.warehouse.query_server import QueryServer

STATIC = Path(__file__).parent / "static"
PAGES = {"overview": "Training overview", "rollouts": "Rollouts", "rollout": "Rollout", "sql": "SQL console",
         "login": "Sign in"}
TOKEN_COOKIE = "spanpipe_token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
CONSOLE_ROWS = 1000  # shown in the page; a download has them all (within the API's caps)
LIVE_INTERVAL = 2.0
_SAFE_INT = 2**53
T = TypeVar("T")


def security_headers(response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")


def page_html(page: str) -> bytes:
    shell = (STATIC / "shell.html").read_text()
    return shell.replace("{title}", PAGES[page]).replace("{page}", page).encode()


class Refreshed(Generic[T]):
    """A result shared by every request and recomputed in the background once older than `fresh`
    seconds; a request waits only when there is none yet or it is older than `stale` (so what a
    page shows is at most `stale` seconds behind). Used for the rollouts table's per-rollout
    summaries — paging and sorting then sort one row per rollout instead of aggregating every
    span — and for the overview, which every open overview page would otherwise recompute."""

    def __init__(self, compute: Callable[[], T], fresh: float = 1.0, stale: float = 5.0) -> None:
        self._compute, self.fresh, self.stale = compute, fresh, stale
        self._table: T | None = None
        self._at = 0.0
        self._lock = threading.Lock()
        self._refreshing = False

    def get(self) -> T:
        with self._lock:
            table, age = self._table, time.monotonic() - self._at
            start = table is not None and self.fresh < age <= self.stale and not self._refreshing
            if start:
                self._refreshing = True
        if table is None or age > self.stale:
            return self._refresh()
        if start:
            threading.Thread(target=self._refresh, name="ui-summaries", daemon=True).start()
        return table

    def _refresh(self) -> T:
        started = time.monotonic()
        try:
            table = self._compute()
        finally:
            with self._lock:
                self._refreshing = False
        with self._lock:
            if started >= self._at:
                self._table, self._at = table, started
        return table


class WebViewer:
    """Adds the viewer to `server`'s app. `live_metrics`: the viewer runs inside a collector, whose
    self-metrics (refusals, queue depth) it can show; a viewer over a file or lake has none."""

    def __init__(self, server: QueryServer, live_metrics: bool) -> None:
        self.server = server
        self.live_metrics = live_metrics
        self._pages = {name: page_html(name) for name in PAGES}
        self.summaries: Refreshed[pa.Table] = Refreshed(lambda: self._with_cursor(queries.rollout_summaries), 1.0, 5.0)
        self.overview: Refreshed[dict[str, Any]] = Refreshed(lambda: self._with_cursor(self._overview_if_changed),
                                                             2.0, 10.0)
        self._overview_seen: tuple[Any, dict[str, Any]] | None = None
        self._coverage: queries.Coverage = {}

    secure = staticmethod(security_headers)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/ui", self._to_overview)
        r.add_get("/ui/", self._page("overview"))
        r.add_get("/ui/rollouts", self._page("rollouts"))
        r.add_get("/ui/rollouts/{rollout_id}", self._page("rollout"))
        r.add_get("/ui/sql", self._page("sql"))
        r.add_get("/ui/login", self._page("login"))
        r.add_post("/ui/login", self._login)
        r.add_static("/ui/static/", STATIC, append_version=False)
        r.add_get("/ui/api/overview", self._overview)
        r.add_get("/ui/api/overview/live", self._overview_live)
        r.add_get("/ui/api/rollouts", self._rollouts)
        r.add_get("/ui/api/rollouts/{rollout_id}", self._rollout)
        r.add_post("/ui/api/sql", self._sql)
        r.add_get("/ui/api/sql/download", self._download)

    # ---- auth (called by the query server's middleware) -------------------------------------
    @staticmethod
    def is_public(path: str) -> bool:
        return path == "/ui/login" or path.startswith("/ui/static/")

    @staticmethod
    def cookie_credentials(request: web.Request) -> str | None:
        token = request.cookies.get(TOKEN_COOKIE)
        return f"Bearer {token}" if token else None

    @staticmethod
    def refuse(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/ui/api/"):
            return web.json_response({"error": "sign in at /ui/login (or send the bearer token)"}, status=401)
        raise web.HTTPFound("/ui/login?next=" + quote(request.path_qs, safe=""))

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = str(form.get("token", ""))
        nxt = str(form.get("next", "") or "/ui/")
        if not nxt.startswith("/ui/") or nxt.startswith("//"):
            nxt = "/ui/"
        authenticate = self.server.authenticate
        if authenticate is not None and not authenticate(f"Bearer {token}"):
            raise web.HTTPFound("/ui/login?failed=1&next=" + quote(nxt, safe=""))
        response = web.HTTPFound(nxt)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/ui/")
        raise response

    # ---- pages ------------------------------------------------------------------------------
    @staticmethod
    async def _to_overview(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    def _page(self, name: str) -> Callable[[web.Request], Any]:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(body=self._pages[name], content_type="text/html", charset="utf-8")
        return handler

    # ---- JSON -------------------------------------------------------------------------------
    async def _json(self, request: web.Request, fn: Callable[..., Any], *args: Any) -> web.Response:
        try:
            result = await self.server.run_trusted(fn, *args)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except Exception as exc:  # noqa: BLE001 — the query API's own mapping (408, 413, 400)
            return self.server.error_response(exc)
        if result is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.Response(body=orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY, default=str),
                            content_type="application/json")

    async def _overview(self, request: web.Request) -> web.Response:
        return await self._json(request, self._overview_now)

    def _overview_if_changed(self, cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """The overview, recomputed only when spans or completions were stored since the last one
        (the same object otherwise, so the live stream sends nothing)."""
        version = cur.execute("SELECT (SELECT count(*) FROM spans), (SELECT max(seq) FROM rollout_completions)").fetchall()[0]
        if self._overview_seen is not None and self._overview_seen[0] == version:
            return self._overview_seen[1]
        doc = queries.overview(cur, coverage_memo=self._coverage)
        self._overview_seen = (version, doc)
        return doc

    def _overview_now(self, _: duckdb.DuckDBPyConnection | None = None) -> dict[str, Any]:
        return {**self.overview.get(), "metrics": self.metrics()}

    def metrics(self) -> dict[str, Any] | None:
        """The collector's refusals and queue depth (None outside a collector)."""
        if not self.live_metrics:
            return None
        return {"refused_requests": counters.by_label("receiver_refused_requests", "reason"),
                "refused_spans": counters.value("receiver_refused_spans"),
                "queue_size": gauges.by_label("exporter_queue_size", "exporter"),
                "queue_capacity": gauges.by_label("exporter_queue_capacity", "exporter"),
                "warehouse_rows": gauges.value("warehouse_rows")}

    async def _overview_live(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: `overview` whenever the shared overview was recomputed (at most
        every 2 s while someone watches), else `metrics`; every LIVE_INTERVAL seconds."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        security_headers(resp)
        stop: asyncio.Queue[Any] = asyncio.Queue()
        self.server.streams.add(stop)
        seen: Any = None
        try:
            await resp.prepare(request)
            await resp.write(b": subscribed\n\n")
            while True:
                current = await self.server.server.run_blocking(self.overview.get)
                if current is not seen:
                    doc = {**current, "metrics": self.metrics()}
                    await resp.write(b"event: overview\ndata: " + orjson.dumps(doc, default=str) + b"\n\n")
                    seen = current
                elif self.live_metrics:
                    await resp.write(b"event: metrics\ndata: " + orjson.dumps(self.metrics()) + b"\n\n")
                else:
                    await resp.write(b": keepalive\n\n")
                try:
                    if await asyncio.wait_for(stop.get(), LIVE_INTERVAL) is None:
                        break
                except TimeoutError:
                    pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except Exception as exc:  # noqa: BLE001 — tell the page, then end the stream
            try:
                await resp.write(b"event: failed\ndata: " + orjson.dumps({"error": str(exc)}) + b"\n\n")
            except ConnectionResetError:
                pass
        finally:
            self.server.streams.discard(stop)
        return resp

    async def _rollouts(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            f = queries.RolloutFilter(
                status=q.get("status") or None, mode=q.get("mode") or None, id_contains=q.get("id") or None,
                since_ms=_number(q.get("since")), until_ms=_number(q.get("until")),
                sort=q.get("sort", "last_span_time"), descending=q.get("dir", "desc") != "asc",
                page=int(q.get("page", "0")), size=int(q.get("size", "50")))
            f.validate()
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return await self._json(request, self._rollouts_now, f)

    def _with_cursor(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        query = self.server.start_query()
        try:
            return fn(query.con)
        finally:
            self.server.finish_query(query)

    def _rollouts_now(self, cur: duckdb.DuckDBPyConnection, f: queries.RolloutFilter) -> dict[str, Any]:
        return queries.rollouts_page(cur, f, None if f.sort == "tokens" else self.summaries.get())

    async def _rollout(self, request: web.Request) -> web.Response:
        return await self._json(request, queries.rollout, request.match_info["rollout_id"],
                                request.query.get("attempt") or None)

    # ---- the SQL console ----------------------------------------------------------------------
    async def _sql(self, request: web.Request) -> web.Response:
        try:
            sql = orjson.loads(await request.read())["sql"]
            if not isinstance(sql, str):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.json_response({"error": 'body must be {"sql": "..."}'}, status=400)
        try:
            table = await self.server.run_console(request, sql)
        except Exception as exc:  # noqa: BLE001 — refused (403), too large (413), timed out (408), wrong (400)
            return self.server.error_response(exc)
        return web.Response(body=orjson.dumps(readable(table, CONSOLE_ROWS)), content_type="application/json")

    async def _download(self, request: web.Request) -> web.StreamResponse:
        sql, fmt = request.query.get("sql", ""), request.query.get("format", "csv")
        if fmt not in ("csv", "parquet"):
            return web.json_response({"error": "format must be csv or parquet"}, status=400)
        try:
            table = await self.server.run_console(request, sql)
        except Exception as exc:  # noqa: BLE001
            return self.server.error_response(exc)
        body = await self.server.server.run_blocking(_encode, table, fmt)
        return web.Response(body=body, content_type="text/csv" if fmt == "csv" else "application/vnd.apache.parquet",
                            headers={"Content-Disposition": f'attachment; filename="spanpipe-query.{fmt}"'})


def _number(text: str | None) -> float | None:
    if not text:
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("times must be finite numbers (milliseconds since the epoch)")
    return value


def _encode(table: pa.Table, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "csv":
        pacsv.write_csv(table, buf)
    else:
        pq.write_table(table, buf)
    return buf.getvalue()


def readable(table: pa.Table, limit: int) -> dict[str, Any]:
    """A console result for the page: columns, the first `limit` rows with times as UTC text
    (columns named *_unix_nano, and timestamps), integers a browser would round as text."""
    shown = table.slice(0, limit)
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    is_time = [f.name.endswith("_unix_nano") or pa.types.is_timestamp(f.type) for f in table.schema]
    out_rows = []
    for row in zip(*(c.to_pylist() for c in shown.columns)) if shown.num_columns else []:
        cells = []
        for value, time_col in zip(row, is_time):
            if time_col and isinstance(value, int):
                value = _utc(value)
            elif isinstance(value, int) and abs(value) >= _SAFE_INT:
                value = str(value)
            elif isinstance(value, (list, dict)):
                value = orjson.dumps(value, default=str).decode()
            elif not isinstance(value, (str, int, float, bool, type(None))):
                value = str(value)  # decimals (a SUM of integers), timestamps, UUIDs, bytes
            elif isinstance(value, float) and not math.isfinite(value):
                value = str(value)
            cells.append(value)
        out_rows.append(cells)
    return {"columns": columns, "rows": out_rows, "total_rows": table.num_rows, "shown_rows": shown.num_rows}


def _utc(ns: int) -> str:
    import datetime as dt

    seconds, rest = divmod(ns, 1_000_000_000)
    try:
        stamp = dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ns)
    return f"{stamp}.{rest // 1_000_000:03d} UTC"
