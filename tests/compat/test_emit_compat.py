"""Live: the emit case table through agentlightning 0.3.0 and through spanpipe.emit, compared
(and the fixture `make test` uses checked against the live answers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanpipe import emit
from tests.emit_cases import capture

HERE = Path(__file__).parent


def test_emitters_match_agentlightning_live() -> None:
    out = subprocess.run([sys.executable, str(HERE / "capture_agentlightning.py")], capture_output=True,
                         text=True, timeout=300, check=True)
    theirs = json.loads(out.stdout)
    memory = InMemorySpanExporter()
    emit.configure(exporter=memory, schedule_delay_millis=5)
    try:
        ours = capture(emit, lambda: (emit.flush(), list(memory.get_finished_spans()))[1], memory.clear)
    finally:
        emit.shutdown()
    assert ours == theirs
    assert json.loads((HERE.parent / "fixtures" / "emit_attributes.json").read_text()) == theirs
