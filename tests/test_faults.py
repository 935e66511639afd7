"""Acknowledged means stored: real collectors under ordinary faults, every acknowledged span
counted by id afterwards (out-of-range enums, an unwritable span, a paused downstream)."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from pathlib import Path

import duckdb
import pytest
import requests
import yaml

from collector import Collector, Tmpfs, config_error, grpc_export, run_cli
from otlp_requests import make_request
from test_delivery import Sender, backend, forwarder, stored_ids
from collector import wait_for
from spanpipe.warehouse import Warehouse


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
        c = Collector(tmp_path, decode_workers="auto")
        c.config["exporters"]["duckdb"]["path"] = str(disk.path / "spans.duckdb")
        c.config["exporters"]["duckdb"]["retry_on_failure"] = {"max_interval": "1s"}
        # The receiver refuses once the batch processor holds this many (default 32,768: ~14 s of
        # this test's sender): what is refused and what is kept does not depend on the number.
        c.config["processors"]["batch"]["max_pending"] = 4000
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
        wait_for(lambda: sum(sender.refused.values()) >= 2, 60, "the receiver to refuse while the disk is full")
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
        if queue == "persistent":
            return

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


def test_a_paused_downstream_gets_its_backlog_in_requests_it_accepts(tmp_path):
    """The backend is SIGSTOPped for 8 s while spans keep coming: the backlog (well over the
    backend's 4 MiB request limit), merged without a size limit by the sending queue, arrives in
    requests the backend accepts, every span exactly once. (Without `sending_queue::batch` requests
    are never merged: tests/test_exporter_helper.py.)"""
    queue_batch = {"max_size": 0, "flush_timeout": "100ms"}
    b = backend(tmp_path / "backend").start()
    queue = {"queue_size": 100_000, "num_consumers": 2, **({"batch": queue_batch} if queue_batch else {})}
    a = forwarder(tmp_path / "front", {"otlp": {
        "endpoint": b.grpc_endpoint, "tls": {"insecure": True}, "timeout": "2s", "sending_queue": queue,
        "retry_on_failure": {"initial_interval": "200ms", "max_interval": "1s", "max_elapsed_time": "0s"}}}).start()
    try:
        senders = [Sender(a.grpc_endpoint, 200, 0.03) for _ in range(2)]  # ~2.5x the backlog asserted below, alone
        for s in senders:
            s.start()
        time.sleep(1)
        b.proc.send_signal(signal.SIGSTOP)
        time.sleep(8)
        b.proc.send_signal(signal.SIGCONT)
        time.sleep(1)
        for s in senders:
            s.stop.set()
            s.join(10)
        acked = [i for s in senders for i in s.acked]
        assert not any(s.refused for s in senders), [s.refused for s in senders]
        assert len(acked) * 434 > 2 * 4 * 1024 * 1024, "the backlog was larger than one request may be"
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


def test_the_query_api_cannot_read_files_or_write(tmp_path):
    secret = tmp_path / "creds.json"
    secret.write_text('{"password": "hunter2"}\n')
    (tmp_path / "creds.csv").write_text("password\nhunter2\n")
    with Collector(tmp_path) as c:
        assert grpc_export(c.grpc_endpoint, make_request(3)[0])[0] == "OK"
        wait_for(lambda: count_stored(c) == 3, 20, "spans")

        def sql(q: str) -> requests.Response:
            return requests.post(c.query_url + "/v1/sql", json={"sql": q, "format": "json"}, timeout=30)

        attempts = [
            f'SELECT (WITH "{secret}" AS (SELECT 1) SELECT 1) AS x, * FROM \'{secret}\'',
            f'SELECT * FROM (WITH "{tmp_path}/creds.csv" AS (SELECT 1) SELECT 1) a, \'{tmp_path}/creds.csv\'',
            f"SELECT * FROM '{tmp_path}/*.csv'",
            f"SELECT * FROM read_text('{secret}')",
        ]
        for q in attempts:
            r = sql(q)
            assert r.status_code in (400, 403), (q, r.status_code, r.text)
            assert "hunter2" not in r.text
        in_scope = sql(f'WITH "{tmp_path}/*.json" AS (SELECT 1 AS one) SELECT * FROM \'{tmp_path}/*.json\'')
        assert in_scope.json() == [{"one": 1}], "a CTE in scope is the CTE, not the file"
        seq = sql("SELECT currval('rollout_completion_seq') AS v")
        r = sql("SELECT nextval('rollout_completion_seq') FROM range(1000)")
        assert r.status_code == 403 and "nextval" in r.text
        assert sql("SELECT currval('rollout_completion_seq') AS v").text == seq.text
        # The CLI's --token path uses the same API: a CTE in scope is still fine.
        ok = sql("WITH s AS (SELECT span_id FROM spans) SELECT count(*) AS n FROM s")
        assert ok.status_code == 200 and ok.json() == [{"n": 3}]
        assert c.stop() == 0


def peak_rss_mib(c: Collector) -> float:
    status = Path(f"/proc/{c.proc.pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024


def test_the_query_api_times_out_caps_results_and_drains(tmp_path):
    c = Collector(tmp_path, fresh_interpreter=True)  # its peak RSS is measured
    c.config["exporters"]["duckdb"]["query"].update(timeout="3s", max_result_size_mib=16, workers=2)
    with c.rewrite():
        def sql(q: str, timeout: float = 30) -> requests.Response:
            return requests.post(c.query_url + "/v1/sql", json={"sql": q, "format": "json"}, timeout=timeout)

        t0 = time.monotonic()
        slow = sql("SELECT count(*) FROM range(1000000000000)")
        assert slow.status_code == 408 and "longer than 3 s" in slow.text
        assert time.monotonic() - t0 < 10
        big = sql("SELECT repeat('x', 300000000) AS s")
        assert big.status_code in (408, 413), big.text[:200]
        assert peak_rss_mib(c) < 1500, "memory stayed bounded"  # was 3.3 GB
        # A client that gives up frees its worker: two abandoned runaway queries, then SELECT 1.
        for _ in range(2):
            try:
                sql("SELECT count(*) FROM range(1000000000000) a", timeout=0.5)
            except requests.exceptions.ReadTimeout:
                pass
        t0 = time.monotonic()
        assert sql("SELECT 1 AS one", timeout=5).json() == [{"one": 1}]
        assert time.monotonic() - t0 < 2.5, "the abandoned queries were interrupted"
        # A drain interrupts a running query.
        import threading
        threading.Thread(target=lambda: sql("SELECT count(*) FROM range(1000000000000)"), daemon=True).start()
        time.sleep(0.5)
        t0 = time.monotonic()
        assert c.stop(timeout=20) == 0
        assert time.monotonic() - t0 < 10


EMAIL = "[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}"


def test_a_hostile_attribute_cannot_freeze_the_redaction_regex(tmp_path):
    """`"a"*200000 + "@"` against the e-mail pattern took ~48 s with a backtracking engine and
    froze every endpoint; RE2 matches in linear time."""
    c = Collector(tmp_path, processors={"redaction": {"allow_all_keys": True, "blocked_values": [EMAIL]},
                                        "batch": {"timeout": "50ms"}})
    with c:
        req, ids = make_request(2)
        span = req.resource_spans[0].scope_spans[0].spans[0]
        span.attributes.add(key="hostile").value.string_value = "a" * 3_000_000 + "@"
        span.attributes.add(key="mail").value.string_value = "write to ann@example.org"
        t0 = time.monotonic()
        assert grpc_export(c.grpc_endpoint, req, timeout=20)[0] == "OK"
        wait_for(lambda: count_stored(c) == 2, 20, "the spans")
        assert time.monotonic() - t0 < 10
        with Warehouse.connect(c.query_url) as wh:
            mail = wh.sql(f"SELECT attributes->>'mail' AS m FROM spans WHERE span_id = '{ids[0][1]}'").to_pylist()
        assert mail == [{"m": "write to ****"}]
        assert c.stop() == 0


def test_a_pattern_re2_cannot_run_is_a_config_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {"redaction": {"allow_all_keys": True, "blocked_values": ["(a+)\\1"]},
                       "filter": {"traces": {"span": ['IsMatch(name, "(?=x)y")']}}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["redaction"],
                                             "exporters": ["debug"]}}}}))
    error = config_error(cfg)
    assert "processors::redaction" in error and "blocked_values::0" in error and "RE2" in error
    cfg.write_text(cfg.read_text().replace("processors: [redaction]", "processors: [filter]"))
    error = config_error(cfg)
    assert "processors::filter" in error and "RE2" in error, error


def test_yaml_alias_bomb_and_deep_nesting_are_clear_config_errors(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb.write_text("\n".join(lines) + "\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("receivers: " + "[" * 10_000 + "]" * 10_000 + "\n")
    for (path, message), command in itertools.product(((bomb, "aliases repeated too often"),
                                                       (deep, "nested more than")), ("validate", "run")):
        # The command, not in-process: were the guard gone, the bomb would take the test worker down with it.
        out = run_cli(command, "--config", str(path), timeout=30)
        assert out.returncode != 0
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr[-500:]


@pytest.mark.parametrize("key,value", [("memory_limit", "-1GB"), ("checkpoint_threshold", "abc"),
                                       ("memory_limit", "lots")])
def test_duckdb_sizes_are_checked_by_validate(tmp_path, key, value):
    c = Collector(tmp_path)
    c.config["exporters"]["duckdb"][key] = value
    error = config_error(c.rewrite().config_path)
    assert "exporters::duckdb" in error and key in error, error


def test_nan_and_infinity_attributes_keep_their_meaning(tmp_path):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    req, ids = make_request(1)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    for key, v in (("nan", float("nan")), ("inf", float("inf")), ("ninf", float("-inf"))):
        span.attributes.add(key=key).value.double_value = v
    arr = span.attributes.add(key="arr").value.array_value
    arr.values.extend([AnyValue(double_value=float("nan")), AnyValue(double_value=1.5)])
    with Collector(tmp_path) as c:
        assert grpc_export(c.grpc_endpoint, req)[0] == "OK"
        assert c.stop() == 0
    with Warehouse.open(c.db) as wh:
        row = wh.sql("SELECT attributes->'nan' AS nan, attributes->'inf' AS inf, attributes->'ninf' AS ninf, "
                     "attributes->'arr' AS arr, attributes->'double' AS d FROM spans").to_pylist()[0]
    assert row == {"nan": '"NaN"', "inf": '"Infinity"', "ninf": '"-Infinity"', "arr": '["NaN",1.5]', "d": "0.1"}


def _limited_collector(tmp_path: Path, limit_mib: int) -> Collector:
    return Collector(tmp_path, decode_workers="auto", fresh_interpreter=True, processors={
        "memory_limiter": {"check_interval": "100ms", "limit_mib": limit_mib, "spike_limit_mib": limit_mib // 5},
        "batch": {"timeout": "50ms"}})


def test_the_decode_price_counts_every_zero_byte_of_any_buffer():
    from spanpipe.admission import BYTES_PER_ZERO_BYTE, TYPICAL_EXPANSION, WORST_EXPANSION, decode_cost
    spans = b"\x0a\x02ab" * 5000 + b"\x0a\x00" * 50  # mostly ordinary, some empty messages
    assert decode_cost(spans) == len(spans) * TYPICAL_EXPANSION + 50 * BYTES_PER_ZERO_BYTE
    for body in (b"", b"span", bytearray(b"\x00a\x00"), memoryview(b"\x00\x00\x00x")[1:]):
        zeros = bytes(body).count(0)
        assert decode_cost(body) == min(len(body) * WORST_EXPANSION,
                                        len(body) * TYPICAL_EXPANSION + zeros * BYTES_PER_ZERO_BYTE)


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path):
    """19 KB of gzip inflating to 19 MiB of empty ResourceSpans took RSS to 862 MiB at a 300 MiB
    limit: the worst-case cost of decoding is reserved first, so it is refused (413), ten at once too."""
    import gzip
    from concurrent.futures import ThreadPoolExecutor
    bomb = gzip.compress(b"\x0a\x00" * (19 * 1024 * 1024 // 2), 9)
    assert len(bomb) < 40_000
    with _limited_collector(tmp_path, 300) as c:
        def post(_: int) -> int:
            return requests.post(c.http_url + "/v1/traces", data=bomb, timeout=60, headers={
                "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}).status_code
        with ThreadPoolExecutor(10) as pool:
            codes = list(pool.map(post, range(10)))
        assert codes == [413] * 10, codes
        assert peak_rss_mib(c) < 600, f"peak RSS {peak_rss_mib(c):.0f} MiB"  # was 862 for one bomb
        req, ids = make_request(20)  # ordinary traffic still goes through
        assert grpc_export(c.grpc_endpoint, req)[0] == "OK"
        assert c.stop() == 0
    assert sorted(stored_ids(c.db)) == sorted(ids)


def test_the_memory_limiter_accepts_again_once_idle_after_an_overload(tmp_path):
    """After an overload of 2 KB spans, RSS stays above the limit (allocators keep freed memory)
    with nothing buffered; a limiter reading RSS refused for ever. It accepts once nothing is held."""
    from concurrent.futures import ThreadPoolExecutor
    templates = []
    for _ in range(4):
        req, _ = make_request(1000)
        for sp in req.resource_spans[0].scope_spans[0].spans:
            sp.attributes.add(key="blob").value.string_value = "x" * 2000
        templates.append(req)
    acked: list[tuple[str, str]] = []
    overloaded = threading.Event()  # the limiter has refused: enough of a flood
    with _limited_collector(tmp_path, 300) as c:
        def flood(i: int) -> dict[str, int]:
            codes: dict[str, int] = {}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not overloaded.is_set():
                req = templates[i]
                spans = req.resource_spans[0].scope_spans[0].spans
                for sp in spans:
                    sp.trace_id = os.urandom(16)
                code, _ = grpc_export(c.grpc_endpoint, req, timeout=10)
                if code == "OK":
                    acked.extend((sp.trace_id.hex(), sp.span_id.hex()) for sp in spans)
                codes[code] = codes.get(code, 0) + 1
                if codes.get("RESOURCE_EXHAUSTED", 0) >= 3:
                    overloaded.set()
            return codes

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(flood, range(4)))
        assert all(set(r) <= {"OK", "RESOURCE_EXHAUSTED"} for r in results), results
        assert overloaded.is_set(), f"the flood never overloaded the collector: {results}"
        wait_for(lambda: count_stored(c) == len(acked), 60, "the backlog to be written")
        time.sleep(1)
        late, late_ids = make_request(50)
        code, detail = grpc_export(c.grpc_endpoint, late)
        assert code == "OK", (detail, f"RSS now {Path(f'/proc/{c.proc.pid}/status').read_text()}")
        assert c.stop() == 0
    got = stored_ids(c.db)
    assert len(got) == len(set(got)) and set(got) == set(acked) | set(late_ids)


def test_log_records_get_the_persistent_queue_too(tmp_path):
    """Log records once bypassed the exporters' queue; now a forwarder acknowledges them into its
    persistent queue while the backend is down and delivers them, once, after a restart."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from collector import free_port
    backend_port = free_port()
    (tmp_path / "backend").mkdir()
    b = Collector(tmp_path / "backend", logs=True)
    b.grpc_port = backend_port
    b.config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = f"127.0.0.1:{backend_port}"
    b.rewrite()
    (tmp_path / "front").mkdir()
    a = Collector(tmp_path / "front", logs=True)
    a.config["extensions"] = {"file_storage": {"directory": str(tmp_path / "queue")}}
    a.config["service"]["extensions"] = ["file_storage"]
    a.config["exporters"] = {"otlp": {"endpoint": f"127.0.0.1:{backend_port}", "tls": {"insecure": True},
                                      "timeout": "1s", "sending_queue": {"storage": "file_storage"},
                                      "retry_on_failure": {"initial_interval": "200ms", "max_interval": "1s"}}}
    a.config["processors"] = {}
    for pipe in a.config["service"]["pipelines"].values():
        pipe.update(processors=[], exporters=["otlp"])
    a.wait_ports = [a.grpc_port, a.http_port]
    a.rewrite().start()
    try:
        request = ExportLogsServiceRequest()
        records = request.resource_logs.add().scope_logs.add().log_records
        for i in range(40):
            rec = records.add()
            rec.time_unix_nano, rec.span_id, rec.trace_id = 1_700_000_000_000_000_000 + i, os.urandom(8), os.urandom(16)
            rec.body.string_value = f"record {i}"
        assert grpc_export(a.grpc_endpoint, request, signal="logs")[0] == "OK"  # backend down: queued
        a.kill()  # kill -9 with the records only in the persistent queue
        assert list((tmp_path / "queue").glob("*logs*/*.batch"))
        b.start()
        a.start()
        wait_for(lambda: requests.post(b.query_url + "/v1/sql", json={"sql": "SELECT count(*) AS n FROM logs",
                                                                    "format": "json"}, timeout=10).json()[0]["n"] == 40,
                 30, "the queued log records at the backend")
        assert a.stop() == 0 and b.stop() == 0
    finally:
        a.kill()
        b.kill()
    with Warehouse.open(b.db) as wh:
        bodies = wh.sql("SELECT body::VARCHAR AS body FROM logs").column("body").to_pylist()
    assert sorted(bodies) == sorted(f'"record {i}"' for i in range(40))


def test_a_full_disk_under_the_rollout_state_file_refuses_nothing_and_repeats_no_id(tmp_path):
    """The rollout processor's state file on a full disk (the warehouse elsewhere): spans are still
    accepted and stored, the counters live on in memory and the error is logged; the whole state is
    written once space returns, so after a restart no rollout repeats a sequence id."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    from otlp_requests import kv

    disk = Tmpfs(tmp_path / "disk", size="1m")
    c = Collector(tmp_path, processors={"rollout": {"state_file": str(disk.path / "rollout-state.jsonl")},
                                        "batch": {"timeout": "50ms"}})
    acked: list[tuple[str, str]] = []

    def send(rollout: str, n: int) -> None:
        request, ids = make_request(n)
        request.resource_spans[0].resource.attributes.append(
            kv("agentlightning.rollout_id", AnyValue(string_value=rollout)))
        assert grpc_export(c.grpc_endpoint, request)[0] == "OK"
        acked.extend(ids)

    try:
        c.start()
        send("r-1", 5)
        wait_for(lambda: count_stored(c) == len(acked), 20, "the first spans")
        disk.fill()
        for i in range(3):  # long ids: lines that need new pages of the file
            send("r-1", 5)
            send(f"r-full-{i}-" + "x" * 3000, 2)
        wait_for(lambda: count_stored(c) == len(acked), 20, "the spans sent while the disk is full")
        assert "rollout-state.jsonl" in c.log() and "No space left on device" in c.log()
        disk.free()
        send("r-1", 5)
        wait_for(lambda: count_stored(c) == len(acked), 20, "the spans sent once space returned")
        assert c.stop() == 0
        assert c.log().count("cannot write the sequence counters") == 1  # once, not per batch
        assert "sequence counters written to" in c.log()
        c.start()
        send("r-1", 5)
        send("r-full-0-" + "x" * 3000, 2)
        wait_for(lambda: count_stored(c) == len(acked), 20, "the spans sent after the restart")
        assert c.stop() == 0
    finally:
        c.kill()
        disk.unmount()
    assert sorted(stored_ids(c.db)) == sorted(acked)
    con = duckdb.connect(str(c.db), read_only=True)
    per_rollout = dict(con.execute("SELECT rollout_id, list(sequence_id) FROM spans GROUP BY rollout_id").fetchall())
    con.close()
    assert sorted(per_rollout["r-1"]) == list(range(1, 31))
    assert all(len(ids) == len(set(ids)) and None not in ids for ids in per_rollout.values()), per_rollout


def test_the_rollout_state_file_at_start_full_disk_starts_wrong_path_refuses(tmp_path):
    """At start, a full disk under the state file is waited out (counters in memory, written once
    space returns); a path that can never work is a clear start-up error."""
    import logging

    from componentkit import Sink, create
    from spanpipe.processors import rollout
    from spanpipe.processors.sequence_counters import SequenceCounters

    (tmp_path / "a-file").write_text("")
    wrong = rollout.RolloutConfig(state_file=str(tmp_path / "a-file" / "state.jsonl"))
    with pytest.raises(RuntimeError, match=r"rollout: cannot use state_file .*a-file/state.jsonl"):
        create(rollout.factory, wrong, Sink()).start()

    disk = Tmpfs(tmp_path / "disk", size="1m")
    try:
        path = disk.path / "state.jsonl"
        path.write_bytes(b'{"r": 7}\n')
        disk.fill()
        kept = SequenceCounters(str(path), 10, logging.getLogger("test"))
        kept.advance(["r"], {"r": 8})
        assert kept.last(["r"]) == {"r": 8} and path.read_bytes() == b'{"r": 7}\n'
        disk.free()
        kept.close()  # the state not written yet is tried once more
        assert SequenceCounters(str(path), 10, logging.getLogger("test")).last(["r"]) == {"r": 8}
    finally:
        disk.unmount()
