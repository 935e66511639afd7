"""Collector and command processes forked from a server process that has already imported what
`spanpipe run` imports for the tests' default config (the CLI, the service, the OTLP receiver,
batch, DuckDB; grpc, duckdb, pyarrow, aiohttp). Each is a real process running
`spanpipe.cli.main([...])` — a collector on its own ports, or a command such as `spanpipe sql` — but
skips the ~1.3 s of CPU an interpreter spends importing that code (~130 collector starts: a quarter
of the suite's CPU). Tests whose subject is the process itself (its imports, memory, signal set-up,
environment) exec the command instead (`Collector(fresh_interpreter=True)`, `run_cli(...,
fresh_interpreter=True)`)."""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from spanpipe.cli import main

_COMPONENTS = (("receivers", "otlp"), ("processors", "batch"), ("exporters", "duckdb"))
_CONTEXT = multiprocessing.get_context("forkserver")
# Module names importable from the server's own sys.path (Python 3.11's fork server does not take
# the parent's): what `spanpipe run` imports for the default config, components included.
_CONTEXT.set_forkserver_preload(["spanpipe.cli", "spanpipe.service", "spanpipe.selftelemetry", *(
    entry_points(group=f"spanpipe.{kind}")[name].module for kind, name in _COMPONENTS)])
_running: set[ForkedProcess] = set()


def _run(argv: list[str], cwd: str, out_path: str, err_path: str, env: dict[str, str], append: bool) -> None:
    """In the child: output and errors where the exec'd command's would go (a collector's log, or
    two captures as `subprocess.run` makes them), then the CLI."""
    for fd, path in ((1, out_path), (2, err_path)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC))
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.exit(main(argv))


def run_command(argv: list[str], cwd: Path, env: dict[str, str], timeout: float,
                scratch: Path) -> subprocess.CompletedProcess[str]:
    """`spanpipe <argv>` in a forked process: what `subprocess.run(capture_output=True, text=True)`
    returns for the exec'd command, without its ~0.6 s of imports. `scratch` holds the captures."""
    out, err = scratch / "stdout", scratch / "stderr"
    process = _CONTEXT.Process(target=_run, args=(argv, str(cwd), str(out), str(err), env, False))
    process.start()
    process.join(timeout)
    if process.exitcode is None:
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        raise subprocess.TimeoutExpired(["spanpipe", *argv], timeout)
    return subprocess.CompletedProcess(["spanpipe", *argv], process.exitcode,
                                       out.read_text(errors="replace"), err.read_text(errors="replace"))


class ForkedProcess:
    """The part of `subprocess.Popen` the tests use, over a process the fork server started (its
    exit status comes back through the server)."""

    def __init__(self, argv: list[str], cwd: Path, log_path: Path, env: dict[str, str]) -> None:
        self._process = _CONTEXT.Process(target=_run, args=(argv, str(cwd), str(log_path), str(log_path), env, True))
        self._process.start()
        self.pid = self._process.pid
        _running.add(self)

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(f"collector {self.pid}", timeout or 0)
        _running.discard(self)
        return self._process.exitcode

    def send_signal(self, sig: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@atexit.register
def _kill_leftovers() -> None:
    """A test that left a collector running must not hold up the worker's exit (multiprocessing
    joins the children it started)."""
    for process in list(_running):
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait(10)
