"""Run the hand-built message rollouts through agentlightning 0.3.0's TraceToMessages; print JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agentlightning.adapter.messages import TraceToMessages  # noqa: E402
from agentlightning.types import Span  # noqa: E402

from tests.messages_cases import CASES, case_spans, messages_view  # noqa: E402


def agl_spans(case_id: str) -> list[Span]:
    return [Span.from_attributes(attributes=s["attributes"], rollout_id="ro-case", attempt_id="at-1",
                                 sequence_id=s["sequence_id"], name=s["name"], trace_id=s["trace_id"],
                                 span_id=s["span_id"], parent_id=s["parent_span_id"],
                                 start_time=s["start_time_unix_nano"] / 1e9, end_time=s["end_time_unix_nano"] / 1e9)
            for s in case_spans(case_id)]


def main() -> None:
    out = {case_id: messages_view(TraceToMessages().adapt(agl_spans(case_id))) for case_id in CASES}
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
