"""What one collector costs to start and stop: wall time until it says "collector started" with
its ports open, wall time from SIGTERM to exit, and the CPU of the whole process tree (collector
and decode workers). Every test that runs a collector pays this, and so does every restart.

Runs alternate between this checkout and, with `--vs DIR`, another version installed there
(`pip install --no-deps --target DIR <commit>`), so both are measured in the same minutes.

    .venv/bin/python bench/startup.py --runs 7
    .venv/bin/python bench/startup.py --runs 7 --decode-workers 0 --vs /tmp/before-pkg
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from collector import Collector  # noqa: E402


def once(where: Path, decode_workers: int | str, pythonpath: str | None) -> tuple[float, float, float]:
    c = Collector(where, decode_workers=decode_workers, env={"PYTHONPATH": pythonpath} if pythonpath else None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    c.start()
    t1 = time.monotonic()
    rc = c.stop()
    t2 = time.monotonic()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert rc == 0, c.log()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return t1 - t0, t2 - t1, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--decode-workers", default="auto", type=lambda v: int(v) if v.isdigit() else v,
                   help="the OTLP receiver's decode_workers")
    p.add_argument("--vs", help="a directory with another spanpipe installed (--target), measured alternately")
    args = p.parse_args()
    sides = {"this checkout": None, **({f"--vs {args.vs}": args.vs} if args.vs else {})}
    figures: dict[str, list[tuple[float, float, float]]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for k, (side, path) in enumerate(sides.items()):
                where = Path(tmp) / f"{run}-{k}"
                where.mkdir()
                figures[side].append(once(where, args.decode_workers, path))
    print(f"{args.runs} runs each, alternating; decode_workers: {args.decode_workers}; medians (min-max)")
    print(f"{'':>28} {'start s':>16} {'stop s':>16} {'CPU s':>16}")
    for side, rows in figures.items():
        cells = []
        for k in range(3):
            values = [r[k] for r in rows]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"{side:>28} " + " ".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
