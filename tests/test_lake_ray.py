"""The Ray Data read side over a lake written by a real collector: triplets, messages and
trajectories from a Ray local cluster (2 CPUs, 127.0.0.1) equal the single-machine path's on the
same lake, and `spanpipe triplets --lake … --engine ray` prints the same triplets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pytest

from collector import SPANPIPE, Collector, run_cli, wait_for
from spanpipe.warehouse.warehouse import Warehouse

import ray  # noqa: E402 — the spanpipe[ray] extra, which make test installs

pytestmark = pytest.mark.xdist_group("ray")  # one worker, one local cluster, one lake for the module

ROOT = Path(__file__).parents[1]
# The S3 test's credentials for the local S3 server, set before the Ray cluster starts so its
# workers have them too (pyarrow reads them from the environment, as on a real cluster).
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
IDS = [f"ro-ray-{n:02d}" for n in range(12)] + ["ro-ray-xss", "ro-ray-early", "ro-ray-nocall"]


def write_lake(tmp: Path, location: str, ids: list[str], **parquet: object) -> Collector:
    """A collector (duckdb + parquet into `location`) fed `ids` by the UI test agent, then stopped."""
    c = Collector(tmp, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}})
    c.config["exporters"]["parquet"] = {"path": location, **parquet}
    c.config["service"]["pipelines"]["traces"]["exporters"] = ["duckdb", "parquet"]
    with c.rewrite():
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{c.grpc_endpoint}"}
        out = subprocess.run([sys.executable, str(ROOT / "tests" / "ui_agent.py"), *ids], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        wh = Warehouse.connect(c.query_url)
        wait_for(lambda: wh.sql("SELECT count(*) AS n FROM rollout_completions").column("n")[0].as_py() == len(ids), 20)
        assert c.stop() == 0
    return c


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("raylake")
    write_lake(tmp, str(tmp / "lake"), IDS, partition_by=["date", "rollout_id"])
    return tmp / "lake"


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def collect(dataset) -> pa.Table:
    table = pa.concat_tables(ray.get(dataset.to_arrow_refs()))
    return table.sort_by([("rollout_id", "ascending"), ("span_id" if "span_id" in table.column_names
                                                          else "sample_index", "ascending")])


def _samples(table: pa.Table) -> list[dict]:
    """Rows in a fixed order, with NaN logprobs (unknown) as None so equal rows compare equal."""
    rows = table.to_pylist()
    for row in rows:
        row["response_logprobs"] = [None if x != x else x for x in row["response_logprobs"]]
    return sorted(rows, key=lambda r: (r["rollout_id"], r["attempt_id"], r["sample_index"]))


def test_ray_gives_what_duckdb_gives_on_the_same_lake(lake: Path, cluster: None) -> None:
    import spanpipe.lake.ray as lake_ray

    with Warehouse.open_lake(lake) as wh:
        one = wh.triplets()
        messages = wh.messages()
        samples = wh.trajectories().table
        later = wh.triplets(since=5, mode="val")
    assert len(one) == 12 * 2 + 2 and set(one.reasons) == {"ro-ray-nocall"}  # two calls each; one in xss, early
    by_rollout_then_span = [("rollout_id", "ascending"), ("span_id", "ascending")]
    result = lake_ray.triplets(str(lake), buckets=3)
    assert set(result.rollout_ids) == set(IDS) and result.cursor == one.cursor == len(IDS)
    assert collect(result.dataset).equals(one.to_arrow().sort_by(by_rollout_then_span))

    got = collect(lake_ray.messages(str(lake)).dataset)
    by_span = {m["span_id"]: m for m in messages}
    assert sorted(got.column("span_id").to_pylist()) == sorted(by_span) and len(by_span) == len(one)
    for row in got.to_pylist():
        assert json.loads(row["messages"]) == by_span[row["span_id"]]["messages"]
        assert row["reward"] == by_span[row["span_id"]]["reward"]

    traj = _samples(collect(lake_ray.trajectories(str(lake)).dataset))
    assert len(traj) == 26 and traj == _samples(samples)

    after = lake_ray.triplets(str(lake), since=5, mode="val")  # the rollouts are chosen as on one machine
    assert after.cursor == later.cursor and 0 < len(later) < len(one)
    assert collect(after.dataset).equals(later.to_arrow().sort_by(by_rollout_then_span))


def test_triplets_cli_with_the_ray_engine(lake: Path, cluster: None) -> None:
    """The CLI joins the cluster in $RAY_ADDRESS, as on a real cluster (starting one of its own
    while this module's runs would cost 20 s of the suite's two cores)."""
    duck = run_cli("triplets", "--lake", str(lake), "--since", "0", timeout=120)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    via_ray = subprocess.run([SPANPIPE, "triplets", "--lake", str(lake), "--since", "0", "--engine", "ray"],
                             capture_output=True, text=True, timeout=300, env=env)
    assert duck.returncode == 0 and via_ray.returncode == 0, via_ray.stderr
    assert via_ray.stdout.splitlines() == duck.stdout.splitlines() and len(duck.stdout.splitlines()) == 26
    assert "26 triplet(s); next cursor: 15" in via_ray.stderr and "26 triplet(s); next cursor: 15" in duck.stderr


def test_a_lake_on_s3_written_by_the_collector_and_read_by_ray(tmp_path: Path, cluster: None) -> None:
    """The parquet exporter writes to an S3-compatible server (moto's, on 127.0.0.1) and Ray reads
    the lake back from there: the triplets are the collector's own warehouse's."""
    import socket

    import boto3

    import spanpipe.lake.ray as lake_ray

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
        wait_for(lambda: _answers(s3), 20, "the S3 server")
        s3.create_bucket(Bucket="training")
        lake = f"s3://training/lake?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        ids = IDS[:6]
        c = write_lake(tmp_path, lake, ids)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="training", Prefix="lake/")["Contents"]]
        files = [k for k in keys if k.endswith(".parquet")]
        assert files and all("/date=" in k for k in files) and not any("/." in k for k in keys)  # no temp file left
        with Warehouse.open(c.db) as own:
            expected = own.triplets(since=0)
        result = lake_ray.triplets(lake)
        assert result.cursor == len(ids) and set(result.rollout_ids) == set(ids)
        assert collect(result.dataset).equals(expected.to_arrow().sort_by([("rollout_id", "ascending"),
                                                                           ("span_id", "ascending")]))
    finally:
        server.terminate()
        server.wait(10)


def _answers(s3) -> bool:
    try:
        s3.list_buckets()
        return True
    except Exception:  # noqa: BLE001 — not up yet
        return False


def test_a_balanced_tier_on_one_lake_gives_one_collectors_triplets(tmp_path: Path, cluster: None) -> None:
    """A front routes 2 clients' 48 rollouts (three shapes) to 3 backends that write one lake, and
    also sends every span to a reference collector: every span is once in the lake, and the triplets
    through Warehouse.connect([backends]) and through Ray over the lake equal the reference's."""
    import spanpipe.lake.ray as lake_ray
    from test_loadbalancing import backend, front, rollouts_sent, start_clients, where_rollouts_landed

    lake = tmp_path / "lake"
    backends = [backend(tmp_path, f"b{k}") for k in range(3)]
    for b in backends:
        b.config["exporters"]["parquet"] = {"path": str(lake)}
        b.config["service"]["pipelines"]["traces"]["exporters"] = ["duckdb", "parquet"]
        b.rewrite()
    (tmp_path / "reference").mkdir()
    reference = Collector(tmp_path / "reference", processors={"rollout": {"idle_timeout": "0s"}, "reward": {},
                                                              "batch": {"timeout": "20ms"}})
    lb = front(tmp_path, backends)
    lb.config["exporters"]["otlp"] = {"endpoint": reference.grpc_endpoint, "tls": {"insecure": True}}
    lb.config["service"]["pipelines"]["traces"]["exporters"] = ["loadbalancing", "otlp"]
    lb.rewrite()
    everything = [*backends, reference, lb]
    try:
        for c in everything:
            c.start()
        sent = rollouts_sent(start_clients(lb.grpc_endpoint, n=2, per_shape=8))  # 204 of them: test_loadbalancing
        total = sum(sent.values())
        per_backend, duplicates = where_rollouts_landed(backends, total, 90)
        ref = Warehouse.connect(reference.query_url)
        wait_for(lambda: ref.sql("SELECT count(*) AS n FROM spans").column("n")[0].as_py() >= total, 60, "the reference")
        ids = sorted(sent)
        expected = ref.triplets(ids).to_arrow()
        federated = Warehouse.connect([b.query_url for b in backends]).triplets(ids).to_arrow()
        assert lb.stop() == 0 and all(c.stop() == 0 for c in [*backends, reference])
    finally:
        for c in everything:
            c.kill()
    assert len(sent) == 48 and duplicates == 0 and all(sum(1 for p in per_backend if r in p) == 1 for r in sent)
    with Warehouse.open_lake(lake) as wh:
        stored = wh.sql("SELECT count(*) AS n, count(DISTINCT (trace_id, span_id)) AS d FROM spans").to_pylist()[0]
    assert stored == {"n": total, "d": total}  # every span once in the lake
    through_ray = collect(lake_ray.triplets(str(lake), rollout_ids=ids).dataset)
    key = [("rollout_id", "ascending"), ("span_id", "ascending")]
    compared = ["rollout_id", "span_id", "prompt_token_ids", "response_token_ids", "reward", "prompt", "response"]
    assert expected.num_rows == 48 and expected.column("reward").null_count == 0
    for got in (federated, through_ray):
        assert got.sort_by(key).select(compared).equals(expected.sort_by(key).select(compared))
