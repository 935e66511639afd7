"""Proxy worker processes: the gateway's HTTP work on more than one core.

One event loop serving calls is the gateway's limit (about 0.9 ms of GIL per call: aiohttp's
server and client, building the span). With `workers: N` the collector process opens the
listening socket and N worker processes accept calls from it, each running the same proxy
(`GatewayApp`) on its own loop. What is stateful stays in the collector process:

- spans: a worker hands its finished calls' spans (and its self-metric events) to the collector
  process every `flush_interval`, over a pipe; there they enter the receiver's bounded
  `SpanBuffer` as in-process spans do;
- pause, resume and the model version: the worker a trainer reaches forwards the request; the
  collector process applies it in every worker (pause waits until each has no call in flight)
  and answers only then, so the next call anywhere sees it;
- shutdown: each worker stops accepting, finishes its calls in flight (streams too), sends the
  last spans and says so; the receiver then drains its buffer into the pipeline.

A worker that exits unexpectedly loses only the calls it was serving (their clients see the
connection close) and is replaced; a worker outlives nothing: it exits when the collector
process is gone.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from spanpipe.decodepool import exit_when_parent_exits

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from spanpipe.extensions.bearertokenauth import BearerTokenAuthConfig
    from spanpipe.receivers.llm_gateway import LlmGatewayConfig, LlmGatewayReceiver
    from spanpipe.selftelemetry import LogsConfig
    from spanpipe.receivers.llm_gateway.spans import GatewaySpan

log = logging.getLogger("spanpipe.receivers.llm_gateway.workers")

READY_TIMEOUT = 60.0


@dataclass
class WorkerSetup:
    """What a worker process needs to serve calls (pickled to it)."""

    receiver_id: str
    config: LlmGatewayConfig
    auth: BearerTokenAuthConfig | None
    parent: int
    logs: LogsConfig  # the collector's: workers log as it does
    # what trainers have set so far (a replacement worker starts with it, before its first call)
    model_version: str = ""
    paused: bool = False


# ---- the collector process's side ------------------------------------------------------------
@dataclass(eq=False)
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    ready: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0

    def send(self, message: tuple[Any, ...]) -> bool:
        try:
            with self.send_lock:
                self.conn.send(message)
            return True
        except (OSError, EOFError, ValueError):  # the worker is gone
            return False


class ProxyWorkers:
    def __init__(self, receiver: LlmGatewayReceiver, count: int) -> None:
        self.receiver, self.count = receiver, count
        self.port = 0
        self._sock: socket.socket | None = None
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._ids = itertools.count(1)
        self._acks: dict[int, tuple[threading.Event, set[int]]] = {}
        self._setup: WorkerSetup | None = None
        # what trainers set, for a worker started later (a replacement) to begin with
        self._model_version = ""
        self._paused = False

    def start(self, host: str, port: int) -> None:
        cfg = self.receiver.config
        auth = None
        if cfg.auth is not None:
            from spanpipe.extensions.bearertokenauth import BearerTokenAuthExtension

            extension = self.receiver.host.extension(cfg.auth.authenticator)
            if not isinstance(extension, BearerTokenAuthExtension):
                raise ValueError(f"{self.receiver.id}: with workers, auth must name a bearertokenauth extension")
            auth = extension.config
        self._setup = WorkerSetup(self.receiver.id, cfg, auth, os.getpid(), _collector_logs())
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"{self.receiver.id}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
        sock.listen(1024)
        self._sock, self.port = sock, sock.getsockname()[1]
        for index in range(self.count):
            self._workers.append(self._spawn(index))
        deadline = time.monotonic() + READY_TIMEOUT
        for w in self._workers:
            while not w.ready.wait(0.05) and not w.stopped.is_set() and time.monotonic() < deadline:
                pass
            if not w.ready.is_set():
                raise RuntimeError(f"{self.receiver.id}: proxy worker {w.index} did not start "
                                   f"(exit code {w.process.exitcode}; see its error above)")

    def _spawn(self, index: int) -> _Worker:
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe(duplex=True)
        assert self._setup is not None
        setup = dataclasses.replace(self._setup, model_version=self._model_version, paused=self._paused)
        process = ctx.Process(target=run_worker, args=(setup, self._sock, theirs),
                              name=f"{self.receiver.id}-proxy-{index}", daemon=True)
        process.start()
        theirs.close()
        worker = _Worker(index, process, ours)
        threading.Thread(target=self._read, args=(worker,), name=f"{self.receiver.id}-proxy-{index}-reader",
                         daemon=True).start()
        return worker

    def in_flight(self) -> int:
        return sum(w.in_flight for w in self._workers)

    def _read(self, worker: _Worker) -> None:
        spans = self.receiver.spans
        metrics = self.receiver.metrics
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "spans":
                _, batch, events, in_flight = message
                for span in batch:
                    spans.add(span)
                for name, *args in events:
                    getattr(metrics, name)(*args)
                worker.in_flight = in_flight
            elif kind == "control":
                _, request_id, operation, value = message
                threading.Thread(target=self._control, args=(worker, request_id, operation, value),
                                 name=f"{self.receiver.id}-control", daemon=True).start()
            elif kind == "ack":
                self._acknowledge(worker.index, message[1])
            elif kind == "ready":
                worker.ready.set()
            elif kind == "stopped":
                worker.in_flight = 0
                worker.stopped.set()
        worker.stopped.set()
        self._on_exit(worker)

    def _on_exit(self, worker: _Worker) -> None:
        worker.process.join(timeout=5)
        with self._lock:
            if self._stopping or worker not in self._workers or not worker.ready.is_set():
                return  # stopping, or it never started: start() reports it
            log.error("%s: proxy worker %d exited (code %s): the calls it was serving are lost; starting another",
                      self.receiver.id, worker.index, worker.process.exitcode)
            replacement = self._spawn(worker.index)
            self._workers[self._workers.index(worker)] = replacement
        self._acknowledge(worker.index)

    def _acknowledge(self, index: int, ack_id: int | None = None) -> None:
        """Worker `index` has applied operation `ack_id` — or, None, is gone: nothing waits for it."""
        with self._lock:
            pending = list(self._acks.values()) if ack_id is None else \
                [self._acks[ack_id]] if ack_id in self._acks else []
            for event, waiting in pending:
                waiting.discard(index)
                if not waiting:
                    event.set()

    def _control(self, origin: _Worker, request_id: int, operation: str, value: str) -> None:
        """Applies a trainer's pause / resume / model version in every worker, then answers the
        worker it came through."""
        ack_id = next(self._ids)
        event = threading.Event()
        with self._lock:
            if operation == "model_version":
                self._model_version = value
            elif operation in ("pause", "resume"):
                self._paused = operation == "pause"
            workers = list(self._workers)
            self._acks[ack_id] = (event, {w.index for w in workers})
        for w in workers:
            if not w.send(("apply", ack_id, operation, value)):
                self._acknowledge(w.index)
        event.wait(self.receiver.config.timeout + 5)
        with self._lock:
            self._acks.pop(ack_id, None)
        origin.send(("done", request_id))

    def stop(self, timeout: float) -> None:
        """Each worker finishes its calls in flight and sends its last spans; then they exit."""
        with self._lock:
            self._stopping = True
            workers = list(self._workers)
        for w in workers:
            w.send(("stop",))
        deadline = time.monotonic() + timeout + 10
        for w in workers:
            if not w.stopped.wait(max(deadline - time.monotonic(), 0.1)):
                log.warning("%s: proxy worker %d did not finish in time; stopping it", self.receiver.id, w.index)
            w.process.join(timeout=max(deadline - time.monotonic(), 1))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            w.conn.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _collector_logs() -> LogsConfig:
    from spanpipe.selftelemetry import JsonFormatter, LogsConfig

    root = logging.getLogger()
    json = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    level = {logging.DEBUG: "debug", logging.WARNING: "warning", logging.ERROR: "error"}.get(root.level, "info")
    return LogsConfig(level=level, encoding="json" if json else "console")


# ---- a worker process's side -----------------------------------------------------------------
class _WorkerHost:
    """What `GatewayApp` needs of its receiver, in a worker process: spans and metric events
    gathered here and sent to the collector process every flush interval."""

    def __init__(self, setup: WorkerSetup, conn: Connection) -> None:
        self.id, self.config = setup.receiver_id, setup.config
        self.log = logging.getLogger(f"spanpipe.receivers.{setup.receiver_id}")
        self.authenticate = None
        if setup.auth is not None:
            from spanpipe.extensions.bearertokenauth import BearerTokenAuthExtension

            extension = BearerTokenAuthExtension(f"{setup.receiver_id}-auth", setup.auth)
            extension.start()
            self.authenticate = extension.authenticate
        self.conn = conn
        self.send_lock = threading.Lock()
        self.spans = self  # `spans.add(span)`, as the receiver's SpanBuffer takes them
        self.metrics = _ForwardedMetrics()
        self._spans: list[GatewaySpan] = []
        self._in_flight_sent = 0

    def add(self, span: GatewaySpan) -> None:
        self._spans.append(span)

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(message)

    def flush(self, in_flight: int) -> None:
        spans, self._spans = self._spans, []
        events = self.metrics.take()
        if spans or events or in_flight != self._in_flight_sent:  # a call's span comes before it leaves
            self.send(("spans", spans, events, in_flight))
            self._in_flight_sent = in_flight


class _ForwardedMetrics:
    """The `GatewayMetrics` calls, recorded as events the collector process replays."""

    def __init__(self) -> None:
        self._events: list[tuple[Any, ...]] = []

    def take(self) -> list[tuple[Any, ...]]:
        events, self._events = self._events, []
        return events

    def call(self, operation: str, outcome: str) -> None:
        self._events.append(("call", operation, outcome))

    def refused(self, reason: str) -> None:
        self._events.append(("refused", reason))

    def upstream_latency(self, seconds: float) -> None:
        self._events.append(("upstream_latency", seconds))

    def first_token(self, seconds: float) -> None:
        self._events.append(("first_token", seconds))


def run_worker(setup: WorkerSetup, sock: socket.socket, conn: Connection) -> None:
    import asyncio

    from spanpipe.httpserver import HttpServer
    from spanpipe.receivers.llm_gateway.proxy import GatewayApp
    from spanpipe.selftelemetry import configure_logging

    # Ctrl-C reaches the whole process group: the collector process decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(setup.logs)
    threading.Thread(target=exit_when_parent_exits, args=(setup.parent,), name="parent-watch", daemon=True).start()
    host = _WorkerHost(setup, conn)
    app = GatewayApp(host)  # type: ignore[arg-type]
    cfg = setup.config
    server = HttpServer(app.application(), "", 0, f"{setup.receiver_id}-proxy", workers=1,
                        shutdown_timeout=cfg.drain_timeout, ssl_context=cfg.tls.ssl_context() if cfg.tls else None,
                        sock=sock)
    answers: dict[int, asyncio.Future[None]] = {}
    request_ids = itertools.count(1)

    async def forward(operation: str, value: str) -> None:
        request_id = next(request_ids)
        answers[request_id] = server.loop.create_future()
        host.send(("control", request_id, operation, value))
        try:
            await answers[request_id]
        finally:
            answers.pop(request_id, None)

    app.control = forward
    app.model_version = setup.model_version
    if setup.paused:
        app.state.resumed.clear()  # no call in flight yet: nothing to wait for
    server.start()
    stop = threading.Event()

    def flusher() -> None:
        while not stop.wait(cfg.flush_interval):
            host.flush(app.state.in_flight)

    threading.Thread(target=flusher, name="span-flusher", daemon=True).start()
    host.send(("ready", os.getpid()))
    try:
        while True:
            message = conn.recv()
            kind = message[0]
            if kind == "apply":
                _, ack_id, operation, value = message

                async def apply_then_ack(ack_id: int = ack_id, operation: str = operation, value: str = value) -> None:
                    await app.apply(operation, value)
                    host.send(("ack", ack_id))

                asyncio.run_coroutine_threadsafe(apply_then_ack(), server.loop)
            elif kind == "done":
                future = answers.get(message[1])
                if future is not None:
                    server.loop.call_soon_threadsafe(lambda f=future: f.done() or f.set_result(None))
            elif kind == "stop":
                break
    except (EOFError, OSError):  # the collector process is gone
        os._exit(0)
    server.stop()  # lets the calls in flight finish, streams too
    stop.set()
    host.flush(0)
    host.send(("stopped",))
    conn.close()
