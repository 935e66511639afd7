"""Per-span cost of reading the promoted columns (span type, rewards, response id) by every
convention's rules — what the `reward` processor does for each span on the ingest path.

    .venv/bin/python bench/span_reading.py            # µs per span, median of 7 passes over 50,000 spans
"""

from __future__ import annotations

import statistics
import time

try:
    from spanpipe.semconv.promoted_columns import RewardReader
except ImportError:  # before one module per convention (for an A/B against an older checkout)
    from spanpipe.semconv.rewards import RewardReader  # type: ignore[no-redef]


class _Batch:
    """The columns RewardReader reads, for 3 LLM spans (GenAI keys, token ids) to 1 tool span."""

    def __init__(self, n: int) -> None:
        self.name, self.attributes, self.events = [], [], []
        self.trace_id, self.span_id = ["t"] * n, ["s"] * n
        for i in range(n):
            if i % 4 == 3:
                self.name.append("tool.search")
                self.attributes.append({"agentlightning.rollout_id": "r", "tool.name": "search", "input": "q"})
            else:
                self.name.append("chat gpt-4o")
                self.attributes.append({
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.response.id": f"chatcmpl-{i}", "gen_ai.usage.input_tokens": 200,
                    "gen_ai.usage.output_tokens": 32, "gen_ai.input.messages": "[...]",
                    "gen_ai.output.messages": "[...]", "agentlightning.rollout_id": "r",
                    "agentlightning.attempt_id": "a", "prompt_token_ids": [1] * 5, "response_token_ids": [2] * 3,
                    "gen_ai.response.finish_reasons": ["stop"], "server.address": "x", "spanpipe.model_version": "1"})
            self.events.append(None)

    def __len__(self) -> int:
        return len(self.name)


def main() -> None:
    batch, reader = _Batch(50_000), RewardReader()
    times = []
    for _ in range(7):
        t = time.perf_counter()
        reader.read(batch)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t)
    print(f"span reading: {statistics.median(times) / len(batch) * 1e6:.2f} µs per span "
          f"(median of {len(times)} passes over {len(batch):,} spans)")


if __name__ == "__main__":
    main()
