"""Live: hand-built message rollouts through agentlightning 0.3.0's TraceToMessages; the fixture that
`make test` compares ours with must be what it gives today."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_messages_fixture_is_agentlightning_output() -> None:
    out = subprocess.run([sys.executable, str(HERE / "capture_agl_messages.py")], capture_output=True,
                         text=True, timeout=300, check=True)
    assert json.loads((HERE.parent / "fixtures" / "messages_agl.json").read_text()) == json.loads(out.stdout)
