"""Live: hand-built rollouts through agentlightning 0.3.0's TracerTraceToTriplet and through ours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from spanpipe.adapters.triplets import TripletAdapter
from tests.triplet_cases import CASES, agl_view, options_of, spans_of

HERE = Path(__file__).parent


def test_triplets_match_agentlightning_live() -> None:
    out = subprocess.run([sys.executable, str(HERE / "capture_agl_triplets.py")], capture_output=True,
                         text=True, timeout=300, check=True)
    theirs = json.loads(out.stdout)
    for case in CASES:
        assert agl_view(TripletAdapter(**options_of(case)).adapt(spans_of(case))) == theirs[case], case
    assert json.loads((HERE.parent / "fixtures" / "triplets_agl.json").read_text()) == theirs
