"""AgentOps: `agentops.span.kind`, agent names on its agent spans, and rewards as a JSON output
`{"type": "reward", "value": x}` in `agentops.task.output` / `agentops.entity.output`."""

from __future__ import annotations

import orjson

from spanpipe.semconv.convention import (AgentRule, Attrs, Convention, Dimension, Events, KindRule, RewardRule,
                                         reward_number)
from spanpipe.semconv.conventions.openllmetry import span_kind_by

SOURCE = "agentops"
OUTPUT_KEYS = ("agentops.task.output", "agentops.entity.output")


def _rewards(name: str, attrs: Attrs, events: Events) -> list[Dimension]:
    out = []
    for key in OUTPUT_KEYS:
        raw = attrs.get(key)
        if isinstance(raw, str) and '"reward"' in raw:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # ordinary output text that mentions "reward"
        elif isinstance(raw, dict):
            doc = raw
        else:
            continue
        if isinstance(doc, dict) and doc.get("type") == "reward":
            out.append({"name": doc.get("name") or "primary", "value": reward_number(doc.get("value"), key),
                        "source": SOURCE})
    return out


CONVENTION = Convention(
    name="agentops",
    title="AgentOps",
    kinds=(KindRule(30, span_kind_by("agentops.span.kind")),),
    agents=(AgentRule(20, "operation.name", when_attr=("agentops.span.kind", "agent")),),
    rewards=RewardRule(20, lambda name, attrs, events: OUTPUT_KEYS[0] in attrs or OUTPUT_KEYS[1] in attrs, _rewards),
)
