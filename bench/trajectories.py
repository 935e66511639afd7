"""Trajectory building speed: 1,000,000 stored spans in 10,000 rollouts of 12 LLM calls whose
200-token prompts grow turn by turn (each turn appends the previous answer and a tool result);
the prefix holds in 9 rollouts out of 10, the rest break at a random token. Also checks that the
NumPy merge equals the plain-Python reference on every rollout.

    .venv/bin/python bench/trajectories.py                  # 10,000 rollouts
    .venv/bin/python bench/trajectories.py --rollouts 2000 --db /tmp/traj.duckdb

The warehouse is written directly (the `spans` table the collector writes), so this measures the
read side: triplet selection + token data + merge, into one Arrow table.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.triplets as layout  # noqa: E402
from spanpipe.adapters.trajectories import merge_reference  # noqa: E402
from spanpipe.warehouse.warehouse import Warehouse  # noqa: E402

BASE_PROMPT, ANSWER, TOOL = 200, 32, 20
base_llm_attrs = layout.llm_attrs


def conversation(r: int) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts and answers of rollout r's 12 calls (deterministic per rollout)."""
    rng = random.Random(r)
    history = [rng.randrange(50_000) for _ in range(BASE_PROMPT)]
    prompts, answers = [], []
    broken_at = rng.randrange(1, 12) if r % 10 == 9 else None
    for k in range(12):
        prompt = list(history)
        if k == broken_at:
            prompt[rng.randrange(len(prompt))] += 1
        answer = [rng.randrange(50_000) for _ in range(ANSWER)]
        prompts.append(prompt)
        answers.append(answer)
        history = prompt + answer + [rng.randrange(50_000) for _ in range(TOOL)]
    return prompts, answers


_cache: dict[int, tuple[list[list[int]], list[list[int]]]] = {}


def llm_attrs(r: int, k: int) -> dict:
    if r not in _cache:
        _cache.clear()
        _cache[r] = conversation(r)
    prompts, answers = _cache[r]
    attrs = base_llm_attrs(r, k)
    attrs["prompt_token_ids"], attrs["response_token_ids"] = prompts[k], answers[k]
    attrs["logprobs.content"] = [{"token": str(t), "logprob": -((t % 300) / 100)} for t in answers[k]]
    return attrs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rollouts", type=int, default=10_000)
    p.add_argument("--db", help="reuse/keep the warehouse here (default: a temp dir)")
    p.add_argument("--check", type=int, default=1000, help="rollouts compared with the reference merge")
    p.add_argument("--pulls", type=int, default=5, help="pulls in one process (the first ones touch fresh memory)")
    args = p.parse_args()
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="spanpipe-traj-")) / "spans.duckdb"
    if not db.exists():
        layout.llm_attrs = llm_attrs
        t0 = time.perf_counter()
        n = layout.write_warehouse(db, args.rollouts, 0)
        print(f"wrote {n:,} spans ({args.rollouts:,} rollouts, 12 calls each, 200-token prompts growing "
              f"turn by turn) in {time.perf_counter() - t0:.1f}s to {db}")
    ids = [f"ro-{r:05d}" for r in range(args.rollouts)]
    with Warehouse.open(db) as wh:
        times = []
        for _ in range(args.pulls):
            t0 = time.perf_counter()
            result = wh.trajectories(ids)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        calls = wh.triplets(ids)
        triplet_time = time.perf_counter() - t0
    reasons = result.breaks.column("reason").to_pylist()
    tokens = sum(len(x) for x in result.table.column("response_ids").to_pylist()[:100])
    print(f"trajectories: {len(result):,} samples, {len(reasons):,} breaks "
          f"({', '.join(f'{r} {reasons.count(r)}' for r in sorted(set(reasons)))}) from {len(calls):,} calls; "
          f"pulls {', '.join(f'{t:.2f}' for t in times)} s: median {sorted(times)[len(times) // 2]:.2f}s "
          f"(min {min(times):.2f}s); the triplet selection alone: "
          f"{triplet_time:.2f}s; first 100 samples hold {tokens:,} response tokens")
    # The merge against the reference, rollout by rollout.
    rows = result.table.to_pylist()
    by_rollout: dict[str, list[dict]] = {}
    for row in rows:
        by_rollout.setdefault(row["rollout_id"], []).append(row)
    checked = 0
    for r in range(min(args.check, args.rollouts)):
        prompts, answers = conversation(r)
        raw = [{"span_id": str(k), "prompt": prompts[k], "response": answers[k], "agent": "solver", "version": "",
                "logprobs": [np.float32(-((t % 300) / 100)) for t in answers[k]]} for k in range(12)]
        ref, _ = merge_reference(raw)
        got = by_rollout[f"ro-{r:05d}"]
        assert [s["prompt"] for s in ref] == [g["prompt_ids"] for g in got], r
        assert [s["response"] for s in ref] == [g["response_ids"] for g in got], r
        assert [s["mask"] for s in ref] == [g["response_mask"] for g in got], r
        checked += 1
    print(f"equal to the reference merge on {checked:,} rollouts")


if __name__ == "__main__":
    main()
