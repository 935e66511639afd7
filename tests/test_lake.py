"""The Parquet lake: partitioned files readable by DuckDB and Warehouse.open_lake, a full disk
that costs nothing, and duckdb retention that archives whole rollouts before deleting them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from collector import Collector, Tmpfs, grpc_export, run_cli
from otlp_requests import make_request
from spanpipe.lake import LAKE_SCHEMA, lake_glob
from spanpipe.warehouse import Warehouse
from collector import wait_for
from test_delivery import stored_ids


def with_parquet(tmp: Path, lake: Path | str, **parquet: object) -> Collector:
    c = Collector(tmp)
    c.config["exporters"]["parquet"] = {"path": str(lake), **parquet}
    c.config["service"]["pipelines"]["traces"]["exporters"] = ["duckdb", "parquet"]
    return c.rewrite()


def lake_ids(lake: Path) -> list[tuple[str, str]]:
    if not any(lake.rglob("*.parquet")):
        return []
    rows = duckdb.sql(f"SELECT trace_id, span_id FROM read_parquet('{lake_glob(str(lake))}')").fetchall()
    return [tuple(r) for r in rows]


def test_parquet_lake_partitioned_and_queryable(tmp_path):
    lake = tmp_path / "lake"
    c = with_parquet(tmp_path, lake, partition_by=["date", "resource.service.name"],
                     sending_queue={"batch": {"min_size": 100, "flush_timeout": "300ms"}})
    sent = []
    with c:
        for service in ("agent-a", "agent/b"):
            for _ in range(3):
                req, ids = make_request(40, service=service)
                assert grpc_export(c.grpc_endpoint, req)[0] == "OK"
                sent += ids
        assert c.stop() == 0
    files = sorted(lake.rglob("*.parquet"))
    dirs = {f.parent.relative_to(lake).as_posix() for f in files}
    assert dirs == {"date=2023-11-14/resource.service.name=agent-a", "date=2023-11-14/resource.service.name=agent%2Fb"}
    assert not list(lake.rglob(".*")), "no temporary file left behind"
    for f in files:
        meta = pq.read_metadata(f)
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert pq.read_schema(f).names == LAKE_SCHEMA.names
    assert sorted(lake_ids(lake)) == sorted(sent)
    # Same rows as the warehouse, column by column.
    with Warehouse.open(c.db) as wh:
        expected = wh.sql("SELECT * FROM spans ORDER BY span_id").to_pylist()
    with Warehouse.open_lake(lake) as wh:
        got = wh.sql("SELECT * FROM spans ORDER BY span_id").to_pylist()
        assert wh.sql("SELECT count(*) AS n FROM llm_calls").column("n")[0].as_py() == 0
    assert got == expected
    out = run_cli("sql", "--lake", str(lake), "--format", "json", "SELECT service_name, count(*) AS n FROM spans "
                  "GROUP BY 1 ORDER BY 1")
    assert out.returncode == 0, out.stderr
    assert '"n": 120' in out.stdout and "agent/b" in out.stdout


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs: a real full disk, not a simulated one."""
    disk = Tmpfs(tmp_path / "small", "3m")
    yield disk.path
    disk.unmount()


def test_disk_full_for_parquet_then_space_returns(tmp_path, small_disk):
    lake = small_disk / "lake"
    filler = small_disk / "filler"
    with open(filler, "wb") as fh:  # fill the disk to the last byte
        try:
            while True:
                fh.write(os.urandom(64 * 1024))
                fh.flush()
        except OSError:
            pass
    c = with_parquet(tmp_path, lake, sending_queue={"batch": {"min_size": 1, "flush_timeout": "0s"}},
                     retry_on_failure={"initial_interval": "300ms", "max_interval": "1s"})
    sent = []
    with c:
        for _ in range(20):
            req, ids = make_request(50)
            assert grpc_export(c.grpc_endpoint, req)[0] == "OK"
            sent += ids
        wait_for(lambda: "No space left on device" in c.log(), 20, "the parquet exporter to hit the full disk")
        # The warehouse, in the same pipeline, has everything meanwhile.
        with Warehouse.connect(c.query_url) as wh:
            wait_for(lambda: wh.sql("SELECT count(*) AS n FROM spans").column("n")[0].as_py() == len(sent), 20,
                     "the warehouse to get every span")
        for f in lake.rglob("*"):  # what readers see is whole (a retry may be writing a hidden .tmp right now)
            if f.is_file() and not f.name.startswith("."):
                pq.read_metadata(f)
        filler.unlink()
        wait_for(lambda: len(set(lake_ids(lake))) == len(sent), 30, "the lake to catch up")
        assert c.stop() == 0
    assert sorted(lake_ids(lake)) == sorted(sent), "every span once in the lake"
    assert not [f for f in lake.rglob(".*") if f.is_file()], "a failed write left its temporary file"
    assert sorted(stored_ids(c.db)) == sorted(sent)
    assert "retrying in" in c.log()


def test_duckdb_retention_archives_oldest_whole_rollouts(tmp_path):
    from spanpipe.exporters.duckdb import DuckDBExporter, DuckDBExporterConfig
    from spanpipe.otlp import decode_traces_protobuf

    lake = tmp_path / "archive"
    cfg = DuckDBExporterConfig.model_validate({
        "path": str(tmp_path / "w.duckdb"), "query": {"enabled": False},
        "retention": {"max_rows": 25, "check_interval": "1h", "archive_path": str(lake),
                      "archive_partition_by": ["rollout_id"]}})
    exporter = DuckDBExporter("duckdb", cfg)
    exporter.start()
    try:
        batches = []
        for i in range(5):  # 5 rollouts x 10 spans, oldest first
            req, _ = make_request(10)
            for sp in req.resource_spans[0].scope_spans[0].spans:
                sp.start_time_unix_nano += i * 10**9
                sp.end_time_unix_nano += i * 10**9
            b = decode_traces_protobuf(req.SerializeToString()).batch
            batches.append(b.with_columns(rollout_id=[f"ro-{i}"] * len(b)))
        for b in batches:
            exporter.send(b, 5)
        assert exporter.apply_retention() == (3, 30)  # keep the newest rollouts that fit in 25 rows
        left = exporter.db.reader().execute("SELECT DISTINCT rollout_id FROM spans ORDER BY 1").fetchall()
        assert [r[0] for r in left] == ["ro-3", "ro-4"]
        assert exporter.apply_retention() == (0, 0)
    finally:
        exporter.shutdown()
    archived = duckdb.sql(f"SELECT rollout_id, count(*) FROM read_parquet('{lake_glob(str(lake))}', "
                          "hive_partitioning = false) GROUP BY 1 ORDER BY 1").fetchall()
    assert archived == [("ro-0", 10), ("ro-1", 10), ("ro-2", 10)]
    assert sorted(p.name for p in lake.iterdir()) == ["rollout_id=ro-0", "rollout_id=ro-1", "rollout_id=ro-2"]


def test_duckdb_retention_by_age_in_a_running_collector(tmp_path):
    c = Collector(tmp_path)
    c.config["exporters"]["duckdb"]["retention"] = {"max_age": "1h", "check_interval": "500ms"}
    with c.rewrite():
        old, _ = make_request(5)  # started in 2023: older than an hour
        fresh, fresh_ids = make_request(5)
        now = time.time_ns()
        for sp in fresh.resource_spans[0].scope_spans[0].spans:
            sp.start_time_unix_nano, sp.end_time_unix_nano = now, now + 1000
        assert grpc_export(c.grpc_endpoint, old)[0] == "OK"
        assert grpc_export(c.grpc_endpoint, fresh)[0] == "OK"
        wait_for(lambda: "retention: removed 1 rollouts/traces (5 spans)" in c.log(), 20, "a retention pass")
        assert c.stop() == 0
    assert sorted(stored_ids(c.db)) == sorted(fresh_ids)


def test_two_collectors_write_one_lake(tmp_path):
    """Unique file names: two collectors (one given a file:// URI) share a lake without clobbering."""
    lake = tmp_path / "lake"
    sent = []
    collectors = []
    for name, location in (("a", str(lake)), ("b", lake.as_uri())):
        (tmp_path / name).mkdir()
        collectors.append(with_parquet(tmp_path / name, location,
                                       sending_queue={"batch": {"min_size": 1, "flush_timeout": "0s"}}).start())
    try:
        for _ in range(4):
            for c in collectors:
                req, ids = make_request(25)
                assert grpc_export(c.grpc_endpoint, req)[0] == "OK"
                sent += ids
        for c in collectors:
            assert c.stop() == 0
    finally:
        for c in collectors:
            c.kill()
    assert sorted(lake_ids(lake)) == sorted(sent)
    assert len({p.name for p in lake.rglob("*.parquet")}) == len(list(lake.rglob("*.parquet"))) >= 2


def test_the_lake_keeps_every_reward_dimension(tmp_path):
    """A multi-dimensional reward: the lake's `rewards` view has every dimension, as the warehouse."""
    from spanpipe import emit

    lake = tmp_path / "lake"
    c = with_parquet(tmp_path, lake)
    c.config["processors"] = {"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}}
    c.config["service"]["pipelines"]["traces"]["processors"] = ["rollout", "reward", "batch"]
    with c.rewrite():
        emit.configure(endpoint=f"http://{c.grpc_endpoint}", service_name="dims")
        with emit.rollout(rollout_id="ro-dims"):
            emit.emit_reward({"correct": 1.0, "length": 0.2, "style": 0.5}, primary_key="correct")
        emit.shutdown()
        Warehouse.connect(c.query_url).wait_for_rollouts(["ro-dims"], timeout=15)
        assert c.stop() == 0
    query = "SELECT rollout_id, idx, name, value, is_primary FROM rewards ORDER BY idx"
    with Warehouse.open(c.db) as wh:
        expected = wh.sql(query).to_pylist()
    with Warehouse.open_lake(lake) as wh:
        got = wh.sql(query).to_pylist()
        final = wh.sql("SELECT final_reward FROM rollouts").column("final_reward").to_pylist()
    assert [(r["name"], r["value"], r["is_primary"]) for r in got] == \
        [("correct", 1.0, True), ("length", 0.2, False), ("style", 0.5, False)]
    assert got == expected and final == [1.0]
