"""Run the hand-built rollouts through agentlightning 0.3.0's TracerTraceToTriplet; print JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agentlightning.adapter.triplet import TracerTraceToTriplet  # noqa: E402
from agentlightning.types import Span  # noqa: E402

from tests.triplet_cases import CASES, agl_view, options_of, spans_of  # noqa: E402


def to_agl_spans(spans: list[dict]) -> list[Span]:
    """Hand-built span dicts (tests/triplet_cases.py shape) as Agent Lightning Spans."""
    return [Span.from_attributes(attributes=s["attributes"], rollout_id="ro-case", attempt_id="at-1",
                                 sequence_id=s["sequence_id"], name=s["name"], trace_id=s["trace_id"],
                                 span_id=s["span_id"], parent_id=s["parent_span_id"],
                                 start_time=s["start_time_unix_nano"] / 1e9, end_time=s["end_time_unix_nano"] / 1e9)
            for s in spans]


def main() -> None:
    out = {}
    for case_id in CASES:
        adapter = TracerTraceToTriplet(**{("_skip_empty_token_spans" if k == "skip_empty_token_spans" else k): v
                                          for k, v in options_of(case_id).items()})
        out[case_id] = agl_view(adapter.adapt(to_agl_spans(spans_of(case_id))))
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
