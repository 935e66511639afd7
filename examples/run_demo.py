"""`make demo`: start a fake OpenAI server and a collector (default config, a fresh warehouse
under ./data/demo/, free ports), run the demo algorithm (which runs the agent), stop everything."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.fake_openai import FakeOpenAI  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{Path(str(proc.args[0])).name} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"{Path(str(proc.args[0])).name} did not open port {port}")


def main() -> int:
    """Extra arguments (--steps N, --rollouts N) go to the algorithm; SPANPIPE_DEMO_DIR moves the
    work directory (default ./data/demo)."""
    workdir = Path(os.environ.get("SPANPIPE_DEMO_DIR") or ROOT / "data" / "demo")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    grpc, http, query = free_port(), free_port(), free_port()
    config = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())
    config["receivers"]["otlp"]["protocols"] = {"grpc": {"endpoint": f"127.0.0.1:{grpc}"},
                                                "http": {"endpoint": f"127.0.0.1:{http}"}}
    config["processors"]["rollout"]["state_file"] = str(workdir / "rollout-state.jsonl")
    config["exporters"]["duckdb"]["path"] = str(workdir / "spans.duckdb")
    config["exporters"]["duckdb"]["query"] = {"endpoint": f"127.0.0.1:{query}"}
    # A free metrics port: `make run` (on the default 8888) may be running beside the demo.
    config.setdefault("service", {}).setdefault("telemetry", {})["metrics"] = {"address": f"127.0.0.1:{free_port()}"}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    spanpipe = str(Path(sys.executable).with_name("spanpipe"))
    log = open(workdir / "collector.log", "wb")
    collector = subprocess.Popen([spanpipe, "run", "--config", str(workdir / "config.yaml")],
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(query, collector)
        wait_port(grpc, collector)
        with FakeOpenAI() as llm:
            print(f"collector: OTLP 127.0.0.1:{grpc}, query API http://127.0.0.1:{query}; "
                  f"fake OpenAI {llm.base_url}\n")
            rc = subprocess.call([sys.executable, str(ROOT / "examples" / "algorithm.py"),
                                  "--collector", f"http://127.0.0.1:{query}", "--otlp", f"http://127.0.0.1:{grpc}",
                                  "--base-url", llm.base_url, *sys.argv[1:]], cwd=ROOT)
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(60)
        log.close()
    print(f"\nwarehouse kept at {workdir / 'spans.duckdb'}; try: "
          f".venv/bin/spanpipe rollouts --db {workdir / 'spans.duckdb'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
