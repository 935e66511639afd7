"""Warehouse: the algorithm's handle on the span warehouse, the same API two ways.

`Warehouse.open(path)` reads the DuckDB file directly (no collector running: DuckDB allows one
writing process, and a collector holds the file while it runs). `Warehouse.connect(url)` goes
through a running collector's read-only query API. `Warehouse.find(path)` picks: the collector's
endpoint from `<path>.endpoint` when it answers, else the file.
"""

from __future__ import annotations

import http.client
import socket
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import duckdb
import orjson
import pyarrow as pa

from spanpipe.warehouse.source import ARROW_STREAM, WarehouseError
from spanpipe.warehouse.views import create_lake_views, create_views, sql_string

if TYPE_CHECKING:
    from spanpipe.adapters.messages import Messages
    from spanpipe.adapters.trajectories import Trajectories
    from spanpipe.adapters.triplet_types import Triplets


log = logging.getLogger("spanpipe.warehouse")


class Warehouse:
    def __init__(self, *, con: duckdb.DuckDBPyConnection | None = None, url: str | None = None,
                 token: str | None = None) -> None:
        self._con, self.url, self._token = con, url, token

    @classmethod
    def open(cls, path: str | Path) -> Warehouse:
        path = Path(path)
        if not path.exists():
            raise WarehouseError(f"no warehouse at {path}")
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as exc:
            raise WarehouseError(f"cannot open {path}: {exc}. If a collector owns the file, "
                                 "query it through its API (--endpoint).") from None
        create_views(con, temporary=True)
        return cls(con=con)

    @classmethod
    def connect(cls, url: str | list[str], token: str | None = None) -> Any:
        """A running collector's query API; a list of URLs (backends of a load-balancing tier) gives
        a `Federation` with the same algorithm API over all of them."""
        if isinstance(url, (list, tuple)):
            from spanpipe.warehouse.federation import Federation

            return Federation([cls.connect(u, token) for u in url])
        url = url if "://" in url else f"http://{url}"
        return cls(url=url.rstrip("/"), token=token)

    @classmethod
    def find(cls, path: str | Path, token: str | None = None) -> Warehouse:
        ep = Path(f"{path}.endpoint")
        if ep.exists():
            url = ep.read_text().strip()
            wh = cls.connect(url, token)
            try:
                wh.sql("SELECT 1")
                return wh
            except WarehouseError as exc:
                if exc.status == 401:  # a collector owns the file: the file itself is locked
                    raise
        return cls.open(path)

    @classmethod
    def open_lake(cls, location: str | Path) -> Warehouse:
        """A Parquet lake written by the `parquet` exporter (or by duckdb retention), with the same
        views as the warehouse; read-only, in memory, nothing is copied."""
        con = duckdb.connect()
        create_lake_views(con, str(location))
        return cls(con=con)

    def ping(self) -> bool:
        try:
            self.sql("SELECT 1")
            return True
        except WarehouseError:
            return False

    def sql(self, query: str) -> pa.Table:
        if self._con is not None:
            try:
                return self._con.sql(query).to_arrow_table()
            except duckdb.Error as exc:
                raise WarehouseError(str(exc)) from None
        body = self._post("/v1/sql", {"sql": query, "format": "arrow"}, ARROW_STREAM)
        return pa.ipc.open_stream(body).read_all()

    def complete_rollout(self, rollout_id: str, status: str = "succeeded") -> dict[str, Any]:
        """Complete a rollout whose agent sends no rollout span, now (its latest attempt), through
        the collector: `POST /v1/rollouts/{id}/complete`. Completion events and cursors follow."""
        if self._con is not None:
            raise WarehouseError("complete_rollout needs a running collector (Warehouse.connect)")
        path = "/v1/rollouts/" + urllib.parse.quote(rollout_id, safe="") + "/complete"
        return orjson.loads(self._post(path, {"status": status}, "application/json"))

    def _post(self, path: str, doc: dict[str, Any], accept: str) -> bytes:
        assert self.url is not None
        headers = {"Content-Type": "application/json", "Accept": accept}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(f"{self.url}{path}", method="POST", headers=headers, data=orjson.dumps(doc))
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                message = orjson.loads(body)["error"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message = body.decode("utf-8", "replace")
            raise WarehouseError(message, exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise WarehouseError(f"cannot reach the collector at {self.url}: {exc}") from None

    def sql_in_background(self, query: str) -> Future[pa.Table]:
        """`sql(query)` on another thread (its own DuckDB cursor), to overlap with work here."""
        def run() -> pa.Table:
            if self._con is None:
                return self.sql(query)
            cursor = self._con.cursor()
            try:
                create_views(cursor, temporary=True)  # an older file's missing tables are per connection
                return cursor.sql(query).to_arrow_table()
            except duckdb.Error as exc:
                raise WarehouseError(str(exc)) from None
            finally:
                cursor.close()

        future: Future[pa.Table] = Future()

        def target() -> None:
            try:
                future.set_result(run())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(exc)

        threading.Thread(target=target, name="warehouse-sql", daemon=True).start()
        return future

    # ---- the algorithm's API -------------------------------------------------------------
    def triplets(self, rollout_ids: Iterable[str] | None = None, since: int | None = None,
                 mode: str | None = None, **adapter_options: Any) -> Triplets:
        """Triplets (see `TripletAdapter` for the options); `.reasons` says why a rollout gave none,
        `.cursor` is what to pass as `since` next time to get only newer completed rollouts."""
        from spanpipe.adapters.triplets import TripletAdapter

        return TripletAdapter(self, **adapter_options).triplets(rollout_ids, since=since, mode=mode)

    def trajectories(self, rollout_ids: Iterable[str] | None = None, since: int | None = None,
                     mode: str | None = None, merge: str = "prefix", reward: str = "final",
                     max_staleness: int | None = None, current_version: str | None = None,
                     **adapter_options: Any) -> Trajectories:
        """Token-level samples for multi-turn RL (`adapters/trajectories.py`): consecutive LLM calls
        whose prompt continues the previous prompt + response are one sample, with a response mask
        and the sampling logprobs; `.breaks` says why calls were not merged."""
        from spanpipe.adapters.trajectories import TrajectoryBuilder

        return TrajectoryBuilder(self, **adapter_options).build(
            rollout_ids, since=since, mode=mode, merge=merge, reward=reward,  # type: ignore[arg-type]
            max_staleness=max_staleness, current_version=current_version)

    def messages(self, rollout_ids: Iterable[str] | None = None, since: int | None = None,
                 mode: str | None = None, **adapter_options: Any) -> Messages:
        """OpenAI chat fine-tuning records (`messages`, `tools`) of the LLM calls `triplets` keeps."""
        from spanpipe.adapters.messages import MessagesAdapter

        return MessagesAdapter(self, **adapter_options).messages(rollout_ids, since=since, mode=mode)

    def rollouts(self, rollout_ids: Iterable[str] | None = None, status: str | None = None) -> pa.Table:
        """The `rollouts` view (status, times, span / LLM-call / token counts, final reward)."""
        where = []
        if rollout_ids is not None:
            where.append("rollout_id IN (" + ", ".join(sql_string(r) for r in rollout_ids) + ")")
        if status is not None:
            where.append(f"status = {sql_string(status)}")
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        return self.sql(f"SELECT * FROM rollouts{cond} ORDER BY start_time_unix_nano")

    def completed_rollouts(self, rollout_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """rollout_id → its latest completion (seq, attempt_id, status, mode, final_reward)."""
        ids = list(dict.fromkeys(rollout_ids))
        if not ids:
            return {}
        rows = self.sql(
            "SELECT rollout_id, arg_max(seq, seq) AS seq, arg_max(attempt_id, seq) AS attempt_id, "
            "arg_max(status, seq) AS status, arg_max(mode, seq) AS mode, arg_max(final_reward, seq) AS final_reward "
            "FROM rollout_completions WHERE rollout_id IN (" + ", ".join(sql_string(r) for r in ids) + ") "
            "GROUP BY rollout_id").to_pylist()
        return {r.pop("rollout_id"): r for r in rows}

    def wait_for_rollouts(self, rollout_ids: Iterable[str] | None = None, timeout: float | None = None,
                          group_size: int | None = None) -> dict[str, dict[str, Any]]:
        """Return when every rollout has completed (its rollout span is stored), or at `timeout`
        with those that have. With `group_size=N` (GRPO-style groups): return when N rollouts of
        each task seen (`spanpipe.task_id`; among `rollout_ids` if given) have completed. Through a
        collector this listens to its `rollout_completed` event stream (no SQL polling); on a
        file, nothing more can arrive, so it answers at once."""
        wanted = set(rollout_ids) if rollout_ids is not None else None
        if group_size is None and wanted is None:
            raise ValueError("give rollout_ids, or group_size to wait for task groups")

        def done_now() -> tuple[dict[str, dict[str, Any]], bool]:
            if group_size is None:
                done = self.completed_rollouts(wanted)
                return done, not (wanted - done.keys())
            return self._groups_done(wanted, group_size)

        done, finished = done_now()
        if self._con is not None or finished:
            return done
        deadline = None if timeout is None else time.monotonic() + timeout
        with EventStream(self.url, ["rollout_completed"], self._token) as stream:
            done, finished = done_now()
            while not finished:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                ev = stream.next(remaining)
                if ev is not None and (wanted is None or ev["data"].get("rollout_id") in wanted):
                    done, finished = done_now()
        if not finished:
            missing = sorted(wanted - done.keys()) if wanted is not None else []
            log.warning("timed out after %ss waiting for %s", timeout,
                        f"{len(missing)} rollout(s): {', '.join(missing[:10])}" + (" …" if len(missing) > 10 else "")
                        if wanted is not None else f"groups of {group_size} completed rollouts per task")
        return done

    def _groups_done(self, wanted: set[str] | None, group_size: int) -> tuple[dict[str, dict[str, Any]], bool]:
        """Completed rollouts of the tasks seen, and whether each task has `group_size` of them."""
        cond = "" if wanted is None else "AND s.rollout_id IN (" + ", ".join(sql_string(r) for r in wanted) + ")"
        tasks = self.sql(
            "SELECT DISTINCT s.rollout_id, s.attributes->>'spanpipe.task_id' AS task FROM spans s "
            f"WHERE s.name = 'agentlightning.rollout' AND s.attributes->>'spanpipe.task_id' IS NOT NULL {cond}")
        by_task: dict[str, list[str]] = {}
        for rid, task in zip(tasks.column("rollout_id").to_pylist(), tasks.column("task").to_pylist()):
            by_task.setdefault(task, []).append(rid)
        done = self.completed_rollouts([r for rids in by_task.values() for r in rids])
        finished = bool(by_task) and all(sum(r in done for r in rids) >= group_size for rids in by_task.values())
        for rid, info in done.items():
            info["task_id"] = next(t for t, rids in by_task.items() if rid in rids)
        return done, finished

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventStream:
    """A client of the query API's Server-Sent Events stream (`GET /v1/events`)."""

    def __init__(self, url: str, types: list[str], token: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        query = urllib.parse.urlencode([("type", t) for t in types])
        headers = {"Accept": "text/event-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._conn.request("GET", f"/v1/events?{query}", headers=headers)
            self._resp = self._conn.getresponse()
        except OSError as exc:
            raise WarehouseError(f"cannot reach the collector at {url}: {exc}") from None
        if self._resp.status != 200:
            raise WarehouseError(f"event stream refused: HTTP {self._resp.status} {self._resp.read()[:200]!r}")
        if self._resp.readline().strip() != b": subscribed":
            raise WarehouseError("event stream did not confirm the subscription")

    def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next event, or None when `timeout` passes first (or the stream ends)."""
        assert self._conn.sock is not None
        self._conn.sock.settimeout(timeout if timeout is None else max(timeout, 0.001))
        data = None
        try:
            while True:
                line = self._resp.readline()
                if not line:
                    return None
                line = line.rstrip(b"\r\n")
                if line.startswith(b"data: "):
                    data = orjson.loads(line[6:])
                elif line == b"" and data is not None:
                    return data
        except (socket.timeout, TimeoutError):
            return None

    def close(self) -> None:
        """Close; a `next` blocked in another thread returns (the socket is shut down first, since
        closing alone waits for that read to end)."""
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conn.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
