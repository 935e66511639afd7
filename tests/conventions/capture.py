"""Capture what a real instrumentation library sends, as a fixture for `make test`.

    python tests/conventions/capture.py LIBRARY        # writes tests/fixtures/conventions/LIBRARY.jsonl

Runs tests/conventions/agent_LIBRARY.py against a local fake OpenAI server, with the OTel SDK's
OTLP/HTTP exporter pointed at a recorder that keeps every request body as the library's exporter
sent it (protobuf bytes, before any decoding of ours). The first line of the fixture says which
library versions produced it. `make capture-conventions` runs this in a venv per library, so the
project never depends on them; tests/test_conventions_captured.py replays the bodies into a real
collector.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from examples.fake_openai import FakeOpenAI  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "conventions"
# What each agent's library is, for the fixture's header.
PACKAGES = {
    "genai_latest": ["opentelemetry-instrumentation-openai-v2", "opentelemetry-util-genai", "openai"],
    "genai_latest_events": ["opentelemetry-instrumentation-openai-v2", "opentelemetry-util-genai", "openai"],
    "pydantic_ai": ["pydantic-ai-slim", "openai"],
    "strands": ["strands-agents", "openai"],
    "agentops": ["agentops", "openai"],
}


class Recorder(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordHandler)
        self.requests: list[dict[str, str]] = []
        self.lock = threading.Lock()


class RecordHandler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:  # noqa: N802 — http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with self.server.lock:
            self.server.requests.append({"path": self.path, "content_type": self.headers.get("Content-Type", ""),
                                         "body": base64.b64encode(body).decode()})
        # AgentOps exports only after its API has handed it a token: this one stays on the machine.
        reply = b'{"token": "local-capture", "project_id": "local"}' if self.path.endswith("/auth/token") else b""
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if reply else "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


def capture(library: str) -> Path:
    recorder = Recorder()
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{recorder.server_address[1]}"
    with FakeOpenAI(token_ids="when_asked") as upstream:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
               "OTEL_RESOURCE_ATTRIBUTES": f"agentlightning.rollout_id=ro-{library}",
               "OTEL_SERVICE_NAME": f"agent-{library}", "FAKE_OPENAI_URL": upstream.base_url,
               "OPENAI_API_KEY": "not-needed", "OPENAI_BASE_URL": upstream.base_url}
        with tempfile.TemporaryDirectory() as scratch:  # AgentOps writes agentops.log where it runs
            out = subprocess.run([sys.executable, str(Path(__file__).with_name(f"agent_{library}.py"))], env=env,
                                 capture_output=True, text=True, timeout=300, cwd=scratch)
    if os.environ.get("CAPTURE_VERBOSE"):
        print(out.stdout, out.stderr)
    recorder.shutdown()
    if out.returncode != 0:
        raise SystemExit(f"agent_{library}.py failed:\n{out.stdout}\n{out.stderr}")
    if not recorder.requests:
        raise SystemExit(f"agent_{library}.py sent nothing:\n{out.stdout}\n{out.stderr}")
    versions = {}
    for name in PACKAGES[library]:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path = FIXTURES / f"{library}.jsonl"
    with path.open("w") as f:
        f.write(json.dumps({"library": library, "versions": versions, "python": sys.version.split()[0],
                            "captured": dt.date.today().isoformat(), "agent_output": out.stdout.strip()}) + "\n")
        for request in recorder.requests:
            if request["path"].endswith(("/v1/traces", "/v1/logs")):
                f.write(json.dumps(request) + "\n")
    return path


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(capture(name))
