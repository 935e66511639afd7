"""`make demo` end to end: fake OpenAI server, collector, instrumented agent, algorithm."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from spanpipe.warehouse.warehouse import Warehouse

ROOT = Path(__file__).parents[1]


def test_demo_runs_and_prints_a_reward_table(tmp_path: Path) -> None:
    """The demo's work directory goes to tmp_path: `make test` leaves nothing in the checkout."""
    out = subprocess.run([sys.executable, "examples/run_demo.py", "--steps", "2", "--rollouts", "4"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "SPANPIPE_DEMO_DIR": str(tmp_path / "demo")})
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if re.match(r"\s+\d+ \|", line)]
    assert len(rows) == 2
    for row in rows:
        step, rollouts, triplets, mean, solved, tokens = [c.strip() for c in row.split("|")]
        assert rollouts == "4" and int(triplets) >= 4 and 0.0 <= float(mean) <= 1.0 and int(tokens) > 0
    n = int(re.search(r"(\d+) triplets pulled in 2 steps", out.stdout).group(1))
    with Warehouse.open(tmp_path / "demo" / "spans.duckdb") as wh:
        assert len(wh.triplets(since=0)) == n
        status = wh.sql("SELECT status, count(*) AS n FROM rollouts GROUP BY status").to_pylist()
        assert status == [{"status": "succeeded", "n": 8}]
        kinds = {r["span_type"] for r in wh.sql("SELECT DISTINCT span_type FROM spans").to_pylist()}
        assert {"rollout", "llm", "reward", "operation"} <= kinds
