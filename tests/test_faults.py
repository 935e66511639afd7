"""Acknowledged means stored: real collectors under ordinary faults, every acknowledged span
counted by id afterwards (out-of-range enums, an unwritable span, a paused downstream)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from collector import Collector, grpc_export
from otlp_requests import make_request
from test_delivery import Sender, backend, forwarder, stored_ids, wait_for
from pipeline.warehouse import Warehouse


def _odd_request() -> tuple[object, list[tuple[str, str]], list[tuple[str, str]]]:
    """Spans with out-of-range kind / status (stored) and times past int64 (rejected)."""
    req, ids = make_request(8)
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[0].kind = 9
    spans[1].kind = 300
    spans[2].kind = -1
    spans[3].status.code = 7
    spans[4].start_time_unix_nano = 2**63
    spans[5].end_time_unix_nano = 2**64 - 1
    bad = [ids[4], ids[5]]
    return req, [i for i in ids if i not in bad], bad


def test_out_of_range_enums_are_stored_and_never_stall_the_writer(tmp_path):
    with Collector(tmp_path) as c:
        req, stored, rejected = _odd_request()
        code, resp = grpc_export(c.grpc_endpoint, req)
        assert code == "OK"
        assert resp.partial_success.rejected_spans == 2
        assert "start_time_unix_nano" in resp.partial_success.error_message
        body = {"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "json-kind", "kind": 99,
             "startTimeUnixNano": "1", "endTimeUnixNano": "2", "status": {"code": 12}}]}]}]}
        r = requests.post(c.http_url + "/v1/traces", json=body, timeout=10)
        assert r.status_code == 200, r.text
        after, after_ids = make_request(5)  # the writer must still be writing
        assert grpc_export(c.grpc_endpoint, after)[0] == "OK"
        assert c.stop() == 0
    got = stored_ids(c.db)
    assert sorted(got) == sorted(stored + after_ids + [("ab" * 16, "cd" * 8)])
    with Warehouse.open(c.db) as wh:
        rows = {r["span_id"]: r for r in wh.sql("SELECT span_id, kind, status_code FROM spans").to_pylist()}
    assert [rows[s]["kind"] for _, s in stored[:3]] == ["9", "300", "-1"]
    assert rows[stored[3][1]]["status_code"] == "7"
    assert rows["cd" * 8] == {"span_id": "cd" * 8, "kind": "99", "status_code": "12"}


class Tmpfs:
    """A real tmpfs of `size` bytes, filled to the last byte on demand."""

    def __init__(self, where: Path, size: str = "48m") -> None:
        self.path = where
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
        self.filler = where / "filler"

    def fill(self) -> None:
        with open(self.filler, "ab") as fh:
            chunk = b"\0" * 65536
            try:
                while True:
                    fh.write(chunk)
                    fh.flush()
            except OSError:
                pass
            for size in (4096, 512, 1):
                try:
                    while True:
                        os.write(fh.fileno(), b"\0" * size)
                except OSError:
                    pass
        assert shutil.disk_usage(self.path).free == 0

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def count_stored(c: Collector) -> int:
    r = requests.post(c.query_url + "/v1/sql", json={"sql": "SELECT count(*) AS n FROM spans", "format": "json"},
                      timeout=10)
    return r.json()[0]["n"] if r.status_code == 200 else -1


def use_persistent_queue(c: Collector, directory: Path) -> None:
    c.config["extensions"] = {"file_storage": {"directory": str(directory)}}
    c.config["service"]["extensions"] = ["file_storage"]
    c.config["exporters"]["duckdb"]["sending_queue"] = {"storage": "file_storage"}


@pytest.mark.parametrize("queue", ["memory", "persistent"])
def test_disk_full_under_the_warehouse_loses_nothing_acknowledged(tmp_path, queue):
    disk = Tmpfs(tmp_path / "disk")
    try:
        c = Collector(tmp_path)
        c.config["exporters"]["duckdb"]["path"] = str(disk.path / "spans.duckdb")
        if queue == "persistent":
            use_persistent_queue(c, tmp_path / "queue")
        c.db = disk.path / "spans.duckdb"
        c.rewrite().start()
        first, first_ids = make_request(10)
        assert grpc_export(c.grpc_endpoint, first)[0] == "OK"
        wait_for(lambda: count_stored(c) == 10, 20, "the first spans")
        disk.fill()
        sender = Sender(c.grpc_endpoint, 200, 0.01)
        sender.start()
        wait_for(lambda: sum(sender.refused.values()) >= 5, 60, "the receiver to refuse while the disk is full")
        assert set(sender.refused) <= {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}, sender.refused
        disk.free()
        time.sleep(2)
        sender.stop.set()
        sender.join()
        acked = first_ids + sender.acked
        wait_for(lambda: count_stored(c) == len(acked), 60, f"{len(acked)} acknowledged spans to be stored")
        assert c.stop(timeout=60) == 0
        got = stored_ids(c.db)
        assert len(got) == len(set(got)) and set(got) == set(acked)

        # A restart while the disk is full: the collector starts, says why it cannot write, and
        # stores what it acknowledged once space returns.
        disk.fill()
        c.start()
        more, more_ids = make_request(50)
        code, _ = grpc_export(c.grpc_endpoint, more)
        wait_for(lambda: "No space left on device" in c.log(), 30, "the collector to say why it cannot write")
        disk.free()
        if code != "OK":
            assert grpc_export(c.grpc_endpoint, more)[0] == "OK"
        wait_for(lambda: count_stored(c) == len(acked) + 50, 60, "the spans sent after the restart")
        assert c.stop(timeout=60) == 0
        got = stored_ids(c.db)
        assert len(got) == len(set(got)) and set(got) == set(acked + more_ids)
    finally:
        c.kill()
        disk.unmount()


@pytest.mark.parametrize("queue_batch", [None, {"max_size": 0, "flush_timeout": "100ms"}],
                         ids=["no-batching", "unlimited-batching"])
def test_a_paused_downstream_gets_its_backlog_in_requests_it_accepts(tmp_path, queue_batch):
    """The backend is SIGSTOPped for 12 s while spans keep coming: the backlog (well over the
    backend's 4 MiB request limit) arrives in requests it accepts, every span exactly once."""
    b = backend(tmp_path / "backend").start()
    queue = {"queue_size": 100_000, "num_consumers": 2, **({"batch": queue_batch} if queue_batch else {})}
    a = forwarder(tmp_path / "front", {"otlp": {
        "endpoint": b.grpc_endpoint, "tls": {"insecure": True}, "timeout": "2s", "sending_queue": queue,
        "retry_on_failure": {"initial_interval": "200ms", "max_interval": "1s", "max_elapsed_time": "0s"}}}).start()
    try:
        senders = [Sender(a.grpc_endpoint, 200, 0.01) for _ in range(2)]
        for s in senders:
            s.start()
        time.sleep(1)
        b.proc.send_signal(signal.SIGSTOP)
        time.sleep(12)
        b.proc.send_signal(signal.SIGCONT)
        time.sleep(1)
        for s in senders:
            s.stop.set()
            s.join(10)
        acked = [i for s in senders for i in s.acked]
        assert not any(s.refused for s in senders), [s.refused for s in senders]
        assert len(acked) * 434 > 3 * 4 * 1024 * 1024, "the backlog was larger than one request may be"
        wait_for(lambda: count_stored(b) >= len(acked), 90, f"{len(acked)} spans at the backend")
        assert a.stop() == 0
        assert b.stop() == 0
    finally:
        b.proc.send_signal(signal.SIGCONT)
        a.kill()
        b.kill()
    got = stored_ids(b.db)
    assert len(got) == len(set(got)) and set(got) == set(acked)
    assert "larger than max" not in a.log()
