"""What kind of span this is (llm, tool, agent, ...), across instrumentation conventions.

Used at ingest by the `reward` processor (the `span_type` column) and at read time by the
`llm_calls` view and the adapters, so both sides agree on what an LLM call is.
"""

from __future__ import annotations

import re
from typing import Any

DEFAULT_LLM_NAME = re.compile(r"openai\.chat\.completion")
LLM_OPERATIONS = {"chat", "text_completion", "generate_content"}
AGENT_KINDS = {"agent", "session", "workflow", "task"}
LOGFIRE_STREAM_PREFIX = "streaming response from"

# The spans `spanpipe.emit` (and Agent Lightning's emitters) make; a reward annotation becomes 'reward'.
AGL_SPAN_TYPES = {
    "agentlightning.message": "message",
    "agentlightning.annotation": "annotation",
    "agentlightning.object": "object",
    "agentlightning.exception": "exception",
    "agentlightning.operation": "operation",
    "agentlightning.rollout": "rollout",
}


def classify(name: str, attrs: dict[str, Any], llm_name: re.Pattern[str] = DEFAULT_LLM_NAME) -> str:
    """llm | tool | agent | reward-less agentlightning kinds | other, whatever instrumentation made the span."""
    if name in AGL_SPAN_TYPES:
        return AGL_SPAN_TYPES[name]
    if "langsmith.span.kind" in attrs:
        lk = str(attrs["langsmith.span.kind"]).lower()
        return "llm" if lk == "llm" else "tool" if lk == "tool" else "agent" if lk == "chain" else "other"
    if name.startswith(LOGFIRE_STREAM_PREFIX) and "request_data" in attrs:
        return "other"  # Logfire's log of a streamed answer: part of its call span's LLM call
    op = attrs.get("gen_ai.operation.name")
    if op == "execute_tool":
        return "tool"
    if op in ("invoke_agent", "create_agent"):
        return "agent"
    for key in ("agentops.span.kind", "traceloop.span.kind"):
        kind = attrs.get(key)
        if kind is not None:
            kind = str(kind).lower()
            if kind == "tool":
                return "tool"
            if kind in AGENT_KINDS:
                return "agent"
            if kind == "llm":
                return "llm"
    oi = attrs.get("openinference.span.kind")
    if oi is not None:
        oi = str(oi).upper()
        if oi == "LLM":
            return "llm"
        if oi == "TOOL":
            return "tool"
        if oi in ("AGENT", "CHAIN"):
            return "agent"
    if op in LLM_OPERATIONS or attrs.get("llm.request.type") in ("chat", "completion") \
            or attrs.get("gen_ai.request.type") == "chat" or llm_name.search(name):
        return "llm"
    if "request_data" in attrs and "gen_ai.system" in attrs and not name.startswith(LOGFIRE_STREAM_PREFIX):
        return "llm"  # Logfire's OpenAI/Anthropic call span (its `streaming response …` sibling is merged into it)
    if name.startswith(("tool.", "execute_tool")):
        return "tool"
    if name.startswith("invoke_agent") or "agent.name" in attrs:
        return "agent"
    return "other"
