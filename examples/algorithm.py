"""Demo algorithm: each step it runs the agent on a batch of rollouts, waits for them to complete
(no polling: the collector's rollout_completed events), pulls only the new triplets with a cursor,
and prints a per-step reward table. A real trainer would update the model where this prints.

    python examples/algorithm.py --collector http://127.0.0.1:4319 --base-url http://127.0.0.1:8765/v1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from spanpipe.warehouse import Warehouse

AGENT = Path(__file__).with_name("math_agent.py")


def run_agents(base_url: str, rollout_ids: list[str], seed: int, otlp: str | None) -> None:
    env = dict(os.environ)
    if otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    cmd = [sys.executable, str(AGENT), "--base-url", base_url, "--seed", str(seed)]
    for rid in rollout_ids:
        cmd += ["--rollout", rid]
    subprocess.run(cmd, check=True, env=env)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--collector", default="http://127.0.0.1:4319", help="the collector's query API")
    p.add_argument("--otlp", help="OTLP endpoint for the agents (default: OTEL_EXPORTER_OTLP_ENDPOINT or :4317)")
    p.add_argument("--base-url", required=True, help="OpenAI-compatible server for the agents")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rollouts", type=int, default=8, help="rollouts per step")
    args = p.parse_args()
    wh = Warehouse.connect(args.collector)
    cursor = wh.sql("SELECT coalesce(max(seq), 0) AS c FROM rollout_completions").column("c")[0].as_py()
    header = f"{'step':>4} | {'rollouts':>8} | {'triplets':>8} | {'mean reward':>11} | {'solved':>6} | {'tokens':>6}"
    print("Columns: step = one training step; rollouts = agent runs completed in it; triplets = (prompt,\n"
          "response, reward) LLM calls pulled since the previous step's cursor; mean reward = over those\n"
          "triplets; solved = rollouts whose final reward is 1; tokens = prompt + response token ids pulled.\n")
    print(header)
    print("-" * len(header))
    total = 0
    for step in range(args.steps):
        ids = [f"demo-s{step}-r{i}" for i in range(args.rollouts)]
        run_agents(args.base_url, ids, seed=step, otlp=args.otlp)
        done = wh.wait_for_rollouts(ids, timeout=60)
        batch = wh.triplets(since=cursor)
        cursor = batch.cursor
        final = [d["final_reward"] for d in done.values() if d["final_reward"] is not None]
        rewards = [t.reward for t in batch if t.reward is not None]
        n_tokens = sum(len(t.prompt["token_ids"]) + len(t.response["token_ids"]) for t in batch)
        mean = sum(rewards) / len(rewards) if rewards else float("nan")
        print(f"{step:>4} | {len(done):>8} | {len(batch):>8} | {mean:>11.3f} | "
              f"{int(sum(final)):>3}/{len(ids):<2} | {n_tokens:>6}")
        for rid, why in batch.reasons.items():
            print(f"     no triplet for {rid}: {why}")
        total += len(batch)
    print(f"{total} triplets pulled in {args.steps} steps")
    return 0 if total else 1


if __name__ == "__main__":
    sys.exit(main())
