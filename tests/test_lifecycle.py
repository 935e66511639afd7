"""Graceful drain: SIGTERM during a steady load loses nothing that was acknowledged."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time

import grpc
import requests
import yaml
from aiohttp import web

from collector import Collector, default_config, free_port, run_cli
from otlp_requests import make_request
from spanpipe.httpserver import HttpServer
from spanpipe.warehouse import Warehouse
from test_otlp_http_grpc import PB, grpc_export


def _grpc_sender(c: Collector, acked: list, stop: threading.Event) -> None:
    while not stop.is_set():
        req, ids = make_request(50)
        try:
            grpc_export(c.grpc_endpoint, req.SerializeToString(), timeout=30)
        except grpc.RpcError:
            if c.proc.poll() is not None:
                return
            continue  # refused during shutdown: not acknowledged, not counted
        acked.extend(ids)


def _http_sender(c: Collector, acked: list, stop: threading.Event) -> None:
    session = requests.Session()
    while not stop.is_set():
        req, ids = make_request(50)
        try:
            r = session.post(f"{c.http_url}/v1/traces", data=req.SerializeToString(), headers=PB, timeout=30)
        except requests.RequestException:
            if c.proc.poll() is not None:
                return
            continue
        if r.status_code == 200:
            acked.extend(ids)


def test_sigterm_under_load_keeps_every_acknowledged_span(tmp_path):
    c = Collector(tmp_path, decode_workers="auto", fresh_interpreter=True).start()
    acked: list[tuple[str, str]] = []
    stop = threading.Event()
    senders = [threading.Thread(target=fn, args=(c, acked, stop)) for fn in (_grpc_sender, _grpc_sender, _http_sender)]
    for t in senders:
        t.start()
    try:
        time.sleep(2.0)
        assert len(acked) > 500, "the load must be flowing before SIGTERM"
        assert c.stop() == 0
    finally:
        stop.set()
        for t in senders:
            t.join(60)
        c.kill()
    assert "draining" in c.log() and "collector stopped" in c.log()
    assert "Traceback" not in c.log(), "a clean stop logs no traceback (an unclosed event loop once did)"
    with Warehouse.open(c.db) as wh:
        stored = {(r["trace_id"], r["span_id"]) for r in wh.sql("SELECT trace_id, span_id FROM spans").to_pylist()}
        total = wh.sql("SELECT count(*) n FROM spans").to_pylist()[0]["n"]
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged spans are missing"
    assert total == len(stored), "no span stored twice"
    assert not c.db.with_name("spans.duckdb.endpoint").exists(), "endpoint file removed on exit"


def test_sigint_also_drains(tmp_path):
    with Collector(tmp_path, decode_workers="auto", fresh_interpreter=True) as c:
        req, ids = make_request(10)
        grpc_export(c.grpc_endpoint, req.SerializeToString())
        c.proc.send_signal(signal.SIGINT)
        assert c.proc.wait(30) == 0
    assert "Traceback" not in c.log(), "a clean stop logs no traceback (an unclosed event loop once did)"
    with Warehouse.open(c.db) as wh:
        assert wh.sql("SELECT count(*) n FROM spans").to_pylist()[0]["n"] == 10


def test_port_in_use_fails_start_with_a_clear_message(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with Collector(tmp_path / "a", fresh_interpreter=True) as first:
        cfg = default_config(tmp_path / "b" / "spans.duckdb", first.grpc_port, free_port(), free_port())
        (tmp_path / "b" / "c.yaml").write_text(yaml.safe_dump(cfg))
        r = run_cli("run", "--config", str(tmp_path / "b" / "c.yaml"), cwd=tmp_path / "b", fresh_interpreter=True)
        assert r.returncode == 1
        assert f"cannot listen on 127.0.0.1:{first.grpc_port}" in r.stderr, r.stderr
        assert first.proc.poll() is None, "the first collector is unaffected"
        assert first.stop() == 0


def test_a_request_still_arriving_when_sigterm_comes_is_answered_and_the_drain_does_not_wait_for_idle_ones(tmp_path):
    """A request whose body is still on its way when the drain starts is read to the end and
    answered (then its connection closed); a kept-alive idle connection does not hold the drain.
    aiohttp's own graceful shutdown dropped the rest of such a body and left the client waiting
    until its timeout — and the drain with it: 30 s under steady HTTP load."""
    with Collector(tmp_path, fresh_interpreter=True) as c:
        idle = requests.Session()
        req, idle_ids = make_request(5)
        assert idle.post(f"{c.http_url}/v1/traces", data=req.SerializeToString(), headers=PB, timeout=10).ok
        req, ids = make_request(20)
        body = req.SerializeToString()
        sending = socket.create_connection(("127.0.0.1", c.http_port), timeout=15)
        sending.sendall((f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:len(body) // 2])
        time.sleep(0.5)  # the collector is reading this request's body
        c.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the drain has begun
        sending.sendall(body[len(body) // 2:])
        answer = b""
        while chunk := sending.recv(65536):  # until the collector closes the connection
            answer += chunk
        sending.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert c.proc.wait(15) == 0
    with Warehouse.open(c.db) as wh:
        stored = {(r["trace_id"], r["span_id"]) for r in wh.sql("SELECT trace_id, span_id FROM spans").to_pylist()}
    assert stored == set(ids) | set(idle_ids)


def test_an_http_server_stops_within_its_shutdown_timeout_even_if_a_request_never_ends(caplog):
    """A handler that never returns is given `shutdown_timeout` once (not once by the drain and
    once more by aiohttp's cleanup); stop() returns without raising and says what it left."""
    started = threading.Event()

    async def forever(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(3600)
        return web.Response(text="never")

    app = web.Application()
    app.router.add_get("/forever", forever)
    server = HttpServer(app, "127.0.0.1", free_port(), "forever", shutdown_timeout=1.0)
    server.start()

    def call() -> None:
        try:
            requests.get(f"http://127.0.0.1:{server.port}/forever", timeout=30)
        except requests.RequestException:
            pass  # the server gave up on it

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    assert started.wait(10)
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="spanpipe.http"):
        server.stop()
    assert time.monotonic() - t0 < 4.0
    assert "forever: 1 request(s) still being served after 1s" in caplog.text
    caller.join(5)
    assert not caller.is_alive(), "the client saw its connection closed, it does not wait for its timeout"
