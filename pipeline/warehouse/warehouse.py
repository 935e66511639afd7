"""Warehouse: the algorithm's handle on the span warehouse, the same API two ways.

`Warehouse.open(path)` reads the DuckDB file directly (no collector running: DuckDB allows one
writing process, and a collector holds the file while it runs). `Warehouse.connect(url)` goes
through a running collector's read-only query API. `Warehouse.find(path)` picks: the collector's
endpoint from `<path>.endpoint` when it answers, else the file.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import duckdb
import orjson
import pyarrow as pa

from pipeline.warehouse.query_server import ARROW_STREAM
from pipeline.warehouse.views import create_views

if TYPE_CHECKING:
    from pipeline.adapters.triplets import Triplets


class WarehouseError(Exception):
    pass


def sql_string(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


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
    def connect(cls, url: str, token: str | None = None) -> Warehouse:
        url = url if "://" in url else f"http://{url}"
        return cls(url=url.rstrip("/"), token=token)

    @classmethod
    def find(cls, path: str | Path) -> Warehouse:
        ep = Path(f"{path}.endpoint")
        if ep.exists():
            url = ep.read_text().strip()
            wh = cls.connect(url)
            if wh.ping():
                return wh
        return cls.open(path)

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
        assert self.url is not None
        headers = {"Content-Type": "application/json", "Accept": ARROW_STREAM}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(f"{self.url}/v1/sql", method="POST", headers=headers,
                                     data=orjson.dumps({"sql": query, "format": "arrow"}))
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                return pa.ipc.open_stream(resp.read()).read_all()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                message = orjson.loads(body)["error"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message = body.decode("utf-8", "replace")
            raise WarehouseError(message) from None
        except (urllib.error.URLError, OSError) as exc:
            raise WarehouseError(f"cannot reach the collector at {self.url}: {exc}") from None

    # ---- the algorithm's API -------------------------------------------------------------
    def triplets(self, rollout_ids: Iterable[str] | None = None, since: int | None = None,
                 mode: str | None = None, **adapter_options: Any) -> Triplets:
        """Triplets (see `TripletAdapter` for the options); `.reasons` says why a rollout gave none,
        `.cursor` is what to pass as `since` next time to get only newer completed rollouts."""
        from pipeline.adapters.triplets import TripletAdapter

        return TripletAdapter(self, **adapter_options).triplets(rollout_ids, since=since, mode=mode)

    def rollouts(self, rollout_ids: Iterable[str] | None = None, status: str | None = None) -> pa.Table:
        """The `rollouts` view (status, times, span / LLM-call / token counts, final reward)."""
        where = []
        if rollout_ids is not None:
            where.append("rollout_id IN (" + ", ".join(sql_string(r) for r in rollout_ids) + ")")
        if status is not None:
            where.append(f"status = {sql_string(status)}")
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        return self.sql(f"SELECT * FROM rollouts{cond} ORDER BY start_time_unix_nano")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
