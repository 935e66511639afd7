"""Running a real collector (`spanpipe run` in a process of its own) on free 127.0.0.1 ports for tests."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from forked import ForkedProcess, run_command

SPANPIPE = str(Path(sys.executable).with_name("spanpipe"))


_handed_out: set[int] = set()
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
# Below the kernel's ephemeral range (32768-60999 here), one block of ports per pytest-xdist
# worker: no worker, client socket or other test run on this machine is handed the same port.
_PORTS = range(10_000 + 2_500 * (_WORKER % 8), 12_500 + 2_500 * (_WORKER % 8))


def free_port() -> int:
    """A port free now and not handed out before in this test run.

    Not the kernel's `bind(0)`: it may give the same ephemeral port to two binds in a row once the
    first socket is closed, so one collector was once configured with one port twice (seen in CI),
    and parallel workers would race for the same ports.
    """
    for port in random.sample(_PORTS, len(_PORTS)):
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port left in {_PORTS}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def default_config(db: Path, grpc: int, http: int, query: int, batch: dict | None = None) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{grpc}"},
            "http": {"endpoint": f"127.0.0.1:{http}"},
        }}},
        "processors": {"batch": batch or {"timeout": "50ms"}},
        "exporters": {"duckdb": {"path": str(db), "query": {"endpoint": f"127.0.0.1:{query}"}}},
        "service": {"pipelines": {
            "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["duckdb"]}},
            "telemetry": {"metrics": {"address": f"127.0.0.1:{free_port()}"}}},
    }


def grpc_export(endpoint: str, request: Any, timeout: float = 10, token: str | None = None,
                credentials: Any = None, signal: str = "traces") -> tuple[str, Any]:
    """One OTLP/gRPC Export (TraceService, or LogsService with signal="logs"): (status code name,
    response or error details). `request` may be a message or raw bytes."""
    import grpc
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    method, response = {
        "traces": ("/opentelemetry.proto.collector.trace.v1.TraceService/Export", ExportTraceServiceResponse),
        "logs": ("/opentelemetry.proto.collector.logs.v1.LogsService/Export", ExportLogsServiceResponse)}[signal]
    channel = grpc.secure_channel(endpoint, credentials) if credentials else grpc.insecure_channel(endpoint)
    with channel:
        call = channel.unary_unary(method, request_serializer=lambda r: r if isinstance(r, bytes) else r.SerializeToString(),
                                   response_deserializer=response.FromString)
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        try:
            return "OK", call(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()


class Collector:
    """A collector subprocess. `ports` are the ones it was configured with."""

    def __init__(self, tmp: Path, config: dict[str, Any] | None = None, wait_ports: list[int] | None = None,
                 env: dict[str, str] | None = None, processors: dict[str, Any] | None = None,
                 logs: bool = False, decode_workers: int | str = 0, fresh_interpreter: bool = False) -> None:
        """`processors`: the default config's pipeline with these processors (in order) instead of batch;
        `logs`: add a logs pipeline (otlp → duckdb); `decode_workers`: the OTLP receiver's, unless
        `config` sets it. 0 (decoding in the receiving thread) spares each test collector a worker
        interpreter (~0.5 s of CPU, bench/startup.py); test_decode_workers holds that workers store exactly what this
        stores, and the tests of the default config's guarantees (faults, drain, kill -9) pass "auto".
        `fresh_interpreter`: exec the `spanpipe` command, for tests of the process itself (imports,
        memory, signals) and whenever `env` is given; else the collector is forked (tests/forked.py)."""
        self.tmp = tmp
        self.db = tmp / "spans.duckdb"
        self.grpc_port, self.http_port, self.query_port = free_port(), free_port(), free_port()
        self.config = config or default_config(self.db, self.grpc_port, self.http_port, self.query_port)
        if processors is not None:
            self.config["processors"] = processors
            self.config["service"]["pipelines"]["traces"]["processors"] = list(processors)
        otlp = self.config.get("receivers", {}).get("otlp")
        if isinstance(otlp, dict):
            otlp.setdefault("decode_workers", decode_workers)
        if logs:
            self.config["service"]["pipelines"]["logs"] = {"receivers": ["otlp"], "exporters": ["duckdb"]}
        self.config_path = tmp / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.wait_ports = wait_ports
        self.log_path = tmp / "collector.log"
        self.env = {**os.environ, **(env or {})}
        self.fresh_interpreter = fresh_interpreter or env is not None
        self.proc: subprocess.Popen[bytes] | ForkedProcess | None = None

    def rewrite(self) -> Collector:
        """Write `self.config` (changed by a test) back to the config file; ports stay."""
        self.config_path.write_text(yaml.safe_dump(self.config))
        return self

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def start(self, timeout: float = 30) -> Collector:
        self._log = open(self.log_path, "ab")
        self._log_offset = len(self.log())
        argv = ["run", "--config", str(self.config_path)]
        if self.fresh_interpreter:
            self.proc = subprocess.Popen([SPANPIPE, *argv], stdout=self._log, stderr=subprocess.STDOUT, cwd=self.tmp,
                                         env=self.env)
        else:
            self.proc = ForkedProcess(argv, self.tmp, self.log_path, self.env)
        ports = self.wait_ports if self.wait_ports is not None else [self.grpc_port, self.http_port, self.query_port]
        deadline = time.monotonic() + timeout
        # Ports open is not start-up done: wait for the service's own word too.
        while not all(port_open(p) for p in ports) or "collector started" not in self._started_log():
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"collector did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def _started_log(self) -> str:
        """The log since this start (a restarted collector appends to the same file)."""
        return self.log()[self._log_offset:]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the collector drains and exits 0."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"collector did not drain within {timeout}s:\n{self.log()}") from None
        self._log.close()
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def config_error(path: Path, env: dict[str, str] | None = None) -> str:
    """Why `spanpipe validate --config path` refuses the config (with `env` added to the
    environment), found in-process (the command is `load_config` and one line: test_config runs
    the command itself); "" when it is valid."""
    from spanpipe.cli import default_registry
    from spanpipe.config import load_config
    from spanpipe.errors import ConfigError

    try:
        load_config(path, default_registry(), env={**os.environ, **(env or {})})
    except ConfigError as exc:
        return str(exc)
    return ""


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60, fresh_interpreter: bool = False) -> subprocess.CompletedProcess[str]:
    """`spanpipe <args>`: its exit code, output and errors. Forked (tests/forked.py) unless the
    test is about the process itself (`fresh_interpreter`) or sets its environment."""
    if fresh_interpreter or env is not None:
        return subprocess.run([SPANPIPE, *args], capture_output=True, text=True, cwd=cwd,
                              env={**os.environ, **(env or {})}, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="spanpipe-cli-") as scratch:
        return run_command(list(args), cwd or Path.cwd(), dict(os.environ), timeout, Path(scratch))


def wait_for(predicate: Any, timeout: float, what: str = "a condition", poll: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


class Tmpfs:
    """A real tmpfs of `size` bytes, filled to the last byte on demand."""

    def __init__(self, where: Path, size: str = "48m") -> None:
        self.path = where
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        assert done.returncode == 0, f"this test mounts a tmpfs and needs root: {done.stderr}"
        self.filler = where / "filler"

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as fh:  # unbuffered: nothing left to flush at close
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
