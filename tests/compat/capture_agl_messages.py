"""Run the hand-built message rollouts through agentlightning 0.3.0's TraceToMessages; print JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agentlightning.adapter.messages import TraceToMessages  # noqa: E402

from tests.compat.capture_agl_triplets import to_agl_spans  # noqa: E402
from tests.messages_cases import CASES, case_spans, messages_view  # noqa: E402


def main() -> None:
    out = {case_id: messages_view(TraceToMessages().adapt(to_agl_spans(case_spans(case_id)))) for case_id in CASES}
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
