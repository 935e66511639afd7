"""The decode pool alone: requests through `DecodePool` from several threads, as the OTLP receiver
sends them, with the rl-training chain's derivations (rollout ids, reward reading).

Prints spans/s and the CPU per span of the worker and of the calling process (the transport, the
unpacking, the GIL hand-overs), per run. Without a collector, a writer or load clients in the way,
it shows the pool's own cost; run it with PYTHONPATH set to another build for an A/B:

    .venv/bin/python bench/decode_pool.py --runs 3
    PYTHONPATH=/tmp/other-build .venv/bin/python bench/decode_pool.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import is_resource_tracker, proc_stats, tree_pids  # noqa: E402
from bench.workload import build_request  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=150, help="per thread and run")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--spans-per-request", type=int, default=512)
    args = ap.parse_args()

    from spanpipe.component import FanOut
    from spanpipe.decodepool import DecodePool
    from spanpipe.derived import downstream
    from spanpipe.processors.reward import RewardConfig, RewardProcessor
    from spanpipe.processors.rollout import RolloutConfig, RolloutProcessor

    reward = RewardProcessor("reward", RewardConfig(), FanOut([]))
    pool = DecodePool(1, "bench", downstream(FanOut([RolloutProcessor("rollout", RolloutConfig(), reward)])))
    try:
        assert pool.ready(60), "the decode worker did not start"
        worker = next(p for p in tree_pids(os.getpid())[1:] if not is_resource_tracker(p))
        rng = random.Random(1)
        bodies = [build_request(args.spans_per_request, rng, f"ro-{i}")[0] for i in range(16)]

        def send() -> None:
            for i in range(args.requests):
                pool.decode(bodies[i % len(bodies)])

        spans = args.threads * args.requests * args.spans_per_request
        for run in range(args.runs):
            w0, c0, t0 = proc_stats(worker)[0], time.process_time(), time.perf_counter()
            threads = [threading.Thread(target=send) for _ in range(args.threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            w1, c1, t1 = proc_stats(worker)[0], time.process_time(), time.perf_counter()
            print(f"run {run + 1}: {spans / (t1 - t0):10,.0f} spans/s   CPU per span: worker "
                  f"{(w1 - w0) / spans * 1e6:5.2f} µs, calling process {(c1 - c0) / spans * 1e6:5.2f} µs")
    finally:
        pool.close()


if __name__ == "__main__":
    main()
