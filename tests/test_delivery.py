"""Delivery guarantees with real collector processes: persistent queue across kill -9, a backend
down for 20 s, a full queue, drain on shutdown, OTLP forwarding over gRPC and HTTP."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from collector import Collector, default_config, free_port, grpc_export, wait_for
from otlp_requests import make_request
from spanpipe.warehouse import Warehouse


def stored_ids(db: Path) -> list[tuple[str, str]]:
    with Warehouse.open(db) as wh:
        return [(r["trace_id"], r["span_id"]) for r in wh.sql("SELECT trace_id, span_id FROM spans").to_pylist()]


def backend(tmp: Path) -> Collector:
    tmp.mkdir(parents=True, exist_ok=True)
    return Collector(tmp, decode_workers="auto")


def forwarder(tmp: Path, exporter: dict[str, Any], extensions: dict[str, Any] | None = None) -> Collector:
    """A collector whose only exporter is `exporter` (an id → config mapping)."""
    tmp.mkdir(parents=True, exist_ok=True)
    c = Collector(tmp, decode_workers="auto")
    cfg = c.config
    cfg["exporters"] = exporter
    cfg["processors"] = {}
    cfg["service"]["pipelines"]["traces"].update(processors=[], exporters=list(exporter))
    if extensions:
        cfg["extensions"] = extensions
        cfg["service"]["extensions"] = list(extensions)
    c.wait_ports = [c.grpc_port, c.http_port]
    return c.rewrite()


class Sender(threading.Thread):
    """Sends requests of `spans` spans every `interval` s; remembers which ids were acknowledged."""

    def __init__(self, endpoint: str, spans: int, interval: float, count: int | None = None) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.spans, self.interval, self.count = endpoint, spans, interval, count
        self.acked: list[tuple[str, str]] = []
        self.refused: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        sent = 0
        while not self.stop.is_set() and (self.count is None or sent < self.count):
            req, ids = make_request(self.spans)
            code, _ = grpc_export(self.endpoint, req, timeout=5)
            if code == "OK":
                self.acked.extend(ids)
                sent += 1
            else:
                self.refused[code] = self.refused.get(code, 0) + 1
            self.stop.wait(self.interval)


def test_persistent_queue_survives_kill_9(tmp_path):
    """Spans acknowledged by a collector that is then killed -9 are all in the warehouse after a
    restart, none twice."""
    queue_dir = tmp_path / "queue"
    c = Collector(tmp_path, decode_workers="auto")
    cfg = c.config
    cfg["processors"] = {}
    cfg["service"]["pipelines"]["traces"]["processors"] = []
    cfg["extensions"] = {"file_storage": {"directory": str(queue_dir)}}
    cfg["service"]["extensions"] = ["file_storage"]
    # The warehouse writes every 5 s at most, so the kill finds requests only on disk.
    cfg["exporters"]["duckdb"]["sending_queue"] = {
        "storage": "file_storage", "queue_size": 100000,
        "batch": {"min_size": 1_000_000, "max_size": 1_000_000, "flush_timeout": "5s"}}
    c.rewrite().start()
    senders = [Sender(c.grpc_endpoint, 50, 0.0) for _ in range(3)]
    for s in senders:
        s.start()
    time.sleep(2.5)
    c.kill()  # SIGKILL, mid-load
    for s in senders:
        s.stop.set()
        s.join(10)
    acked = [i for s in senders for i in s.acked]
    assert len(acked) > 500, "the load ran"
    queued = list((queue_dir / "exporter_duckdb").glob("*.batch"))
    assert queued, "requests were in the persistent queue when the collector died"

    c.start()
    assert c.stop() == 0
    assert "queued requests from a previous run" in c.log()
    ids = stored_ids(c.db)
    assert len(ids) == len(set(ids)), "no span twice"
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged spans lost"
    assert not list((queue_dir / "exporter_duckdb").glob("*.batch")), "the queue drained"


def test_a_transaction_of_whole_row_groups_skips_the_wal_and_survives_kill_9(tmp_path):
    """Requests merged into transactions of at least `row_group_size` spans are written into the
    file itself at commit, not copied into the WAL; they are there after a kill -9, none twice."""
    c = Collector(tmp_path, decode_workers="auto")
    c.config["exporters"]["duckdb"].update(
        row_group_size=2048, sending_queue={"queue_size": 1000, "batch": {
            "min_size": 4096, "max_size": 8192, "flush_timeout": "10s"}})
    c.rewrite().start()
    acked: list[tuple[str, str]] = []
    for _ in range(16):
        req, ids = make_request(512)
        assert grpc_export(c.grpc_endpoint, req)[0] == "OK"
        acked.extend(ids)
    wait_for(lambda: Warehouse.connect(c.query_url).sql("SELECT count(*) AS n FROM spans").to_pylist()[0]["n"]
             == len(acked), 30, "every span stored")
    wal = Path(f"{c.db}.wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    assert wal_bytes < 256 * 1024, f"the spans went through the WAL ({wal_bytes} bytes)"
    c.kill()

    c.start()
    assert c.stop() == 0
    ids = stored_ids(c.db)
    assert len(ids) == len(set(ids)), "no span twice"
    assert set(ids) == set(acked)


def test_backend_down_20s_everything_arrives(tmp_path):
    """A forwarding collector keeps what it accepted while its backend is stopped for 20 s and
    delivers all of it once the backend is back."""
    b = backend(tmp_path / "backend").start()
    a = forwarder(tmp_path / "front", {"otlp": {
        "endpoint": b.grpc_endpoint, "tls": {"insecure": True}, "timeout": "2s",
        "sending_queue": {"queue_size": 5000, "num_consumers": 4},
        "retry_on_failure": {"initial_interval": "200ms", "max_interval": "2s", "max_elapsed_time": "120s"}}}).start()
    try:
        sender = Sender(a.grpc_endpoint, 20, 0.05)
        sender.start()
        time.sleep(3)
        assert b.stop() == 0
        down_at = time.monotonic()
        time.sleep(20)
        b.start()
        up_after = time.monotonic() - down_at
        time.sleep(3)
        sender.stop.set()
        sender.join(10)
        assert not sender.refused, sender.refused
        acked = set(sender.acked)

        def arrived() -> bool:
            with Warehouse.connect(b.query_url) as wh:
                return wh.sql("SELECT count(*) AS n FROM spans").column("n")[0].as_py() >= len(acked)

        wait_for(arrived, 60, "the backlog to reach the backend")
        assert a.stop() == 0
        assert b.stop() == 0
    finally:
        a.kill()
        b.kill()
    ids = stored_ids(b.db)
    assert up_after >= 20
    assert len(ids) == len(set(ids))
    assert acked <= set(ids), f"{len(acked - set(ids))} spans lost"
    assert len(acked) > 20 * 20 * 5, "load kept flowing while the backend was down"
    assert "retrying in" in a.log() and "UNAVAILABLE" in a.log()


def test_full_queue_refuses_with_a_retryable_code(tmp_path):
    dead = free_port()
    a = forwarder(tmp_path, {"otlp": {
        "endpoint": f"127.0.0.1:{dead}", "tls": {"insecure": True}, "timeout": "1s",
        "sending_queue": {"queue_size": 2, "num_consumers": 1},
        "retry_on_failure": {"initial_interval": "5s", "max_interval": "5s", "max_elapsed_time": "0s"}}})
    with a:
        codes = [grpc_export(a.grpc_endpoint, make_request(5)[0])[0] for _ in range(6)]
        assert codes[:3] == ["OK"] * 3, codes  # one in flight, two queued
        assert set(codes[3:]) == {"RESOURCE_EXHAUSTED"}, codes
        metrics = scrape(a)
        assert 'otelcol_exporter_queue_capacity{exporter="otlp"} 2.0' in metrics
        assert 'otelcol_exporter_enqueue_failed_spans_total{exporter="otlp"} 15.0' in metrics


def scrape(c: Collector) -> str:
    import urllib.request

    address = c.config["service"]["telemetry"]["metrics"]["address"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_shutdown_keeps_undelivered_requests_on_disk_then_delivers_them(tmp_path):
    """SIGTERM with the backend down: one last attempt, exit within drain_timeout, the requests stay
    in the persistent queue; the next start delivers them."""
    b_dir = tmp_path / "backend"
    b_dir.mkdir()
    b = Collector(b_dir, decode_workers="auto")  # configured (ports fixed) but not started yet
    queue_dir = tmp_path / "queue"
    a = forwarder(tmp_path / "front", {"otlphttp": {
        "endpoint": b.http_url, "timeout": "1s",
        "sending_queue": {"storage": "file_storage", "drain_timeout": "2s"},
        "retry_on_failure": {"initial_interval": "500ms", "max_interval": "1s"}}},
        extensions={"file_storage": {"directory": str(queue_dir)}})
    sent: list[tuple[str, str]] = []
    with a:
        for _ in range(4):
            req, ids = make_request(10)
            assert grpc_export(a.grpc_endpoint, req)[0] == "OK"
            sent += ids
        t0 = time.monotonic()
        assert a.stop() == 0
        assert time.monotonic() - t0 < 15
    assert "stay in the persistent queue" in a.log()
    assert len(list((queue_dir / "exporter_otlphttp").glob("*.batch"))) == 4
    with b:
        a.start()
        wait_for(lambda: not list((queue_dir / "exporter_otlphttp").glob("*.batch")), 30, "the queue to drain")
        assert a.stop() == 0
        assert b.stop() == 0
    assert sorted(stored_ids(b.db)) == sorted(sent)


def test_otlphttp_json_gzip_forwarding_and_a_permanent_error(tmp_path):
    """otlphttp (json + gzip) delivers to a real backend; a 4xx from the backend is permanent:
    dropped at once, counted, not retried."""
    b = backend(tmp_path / "backend")
    a = forwarder(tmp_path / "front", {
        "otlphttp": {"endpoint": b.http_url, "encoding": "json", "compression": "gzip"},
        "otlphttp/wrong": {"traces_endpoint": b.http_url + "/v1/nowhere", "endpoint": b.http_url,
                           "retry_on_failure": {"initial_interval": "5s", "max_interval": "5s"}}})
    with b, a:
        req, ids = make_request(7)
        assert grpc_export(a.grpc_endpoint, req)[0] == "OK"
        wait_for(lambda: 'otelcol_exporter_send_failed_spans_total{exporter="otlphttp/wrong"} 7.0' in scrape(a),
                 20, "the permanent failure to be counted")
        assert a.stop() == 0
        assert b.stop() == 0
    assert sorted(stored_ids(b.db)) == sorted(ids)
    assert "HTTP 404" in a.log() and "not retryable" in a.log()


def test_persistent_queue_recovers_in_order_and_sets_an_unreadable_file_aside(tmp_path):
    from spanpipe.exporterhelper.queue import FileStore, SendingQueue
    from spanpipe.otlp import decode_traces_protobuf

    batches = [decode_traces_protobuf(make_request(3)[0].SerializeToString()).batch for _ in range(3)]
    q = SendingQueue(10, FileStore(tmp_path, fsync=True))
    for b in batches:
        q.put(b)
    (tmp_path / "0000000000000002.3.batch").write_bytes(b"written by something else")
    (tmp_path / "0000000000000009.3.tmp").write_bytes(b"half")  # never renamed: never acknowledged

    again = SendingQueue(10, FileStore(tmp_path, fsync=False))  # a restart
    assert again.recovered == 3 and not list(tmp_path.glob("*.tmp"))
    keys, merged = again.take(1.0)
    assert keys == [1, 3]
    assert merged.span_id == batches[0].span_id + batches[2].span_id
    assert (tmp_path / "unreadable" / "0000000000000002.3.batch").exists()
    again.done(keys)
    assert not list(tmp_path.glob("*.batch"))
    again.put(batches[0])
    assert [p.name for p in tmp_path.glob("*.batch")] == ["0000000000000004.3.batch"], "keys keep increasing"


def test_log_records_queued_on_disk_by_the_previous_version_are_read_back_as_a_log_batch(tmp_path):
    """Log records were queued as a bare Arrow table before LogBatch; a queue directory left by
    that version must still deliver them after an upgrade."""
    import pickle

    from componentkit import log_records
    from spanpipe.exporterhelper.queue import FileStore, SendingQueue
    from spanpipe.logbatch import LogBatch

    old = log_records(4).table
    (tmp_path / "0000000000000001.4.batch").write_bytes(FileStore.MAGIC + pickle.dumps(old))
    q = SendingQueue(10, FileStore(tmp_path, fsync=False))
    q.put(log_records(2))
    keys, merged = q.take(1.0)
    assert keys == [1, 2] and isinstance(merged, LogBatch) and len(merged) == 6
    assert merged.table.slice(0, 4).equals(old)
