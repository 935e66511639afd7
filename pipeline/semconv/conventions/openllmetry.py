"""OpenLLMetry (Traceloop): `traceloop.span.kind`, `llm.request.type`, and messages as flat indexed
attributes `gen_ai.prompt.<i>.*` / `gen_ai.completion.<i>.*` (the GenAI attribute names before
the conventions moved messages to events)."""

from __future__ import annotations

from spanpipe.semconv.convention import Attrs, Convention, Events, KindRule, Message, MessagesReader
from spanpipe.semconv.messages import from_openai
from spanpipe.semconv.values import indexed

AGENT_KINDS = {"agent", "session", "workflow", "task"}


def span_kind_by(key: str):
    """Rule for a `<vendor>.span.kind` attribute (OpenLLMetry's and AgentOps' share the values)."""
    def decide(name: str, attrs: Attrs) -> str | None:
        kind = attrs.get(key)
        if kind is None:
            return None
        kind = str(kind).lower()
        return "tool" if kind == "tool" else "agent" if kind in AGENT_KINDS else "llm" if kind == "llm" else None
    return decide


def _request_type(name: str, attrs: Attrs) -> str | None:
    return "llm" if attrs.get("llm.request.type") in ("chat", "completion") or \
        attrs.get("gen_ai.request.type") == "chat" else None


def _messages(prefix: str, default_role: str):
    def read(attrs: Attrs, events: Events) -> list[Message] | None:
        rows = indexed(attrs, prefix)
        if not rows:
            return None
        return [from_openai({"role": row.get("role") or default_role, "content": row.get("content"),
                             "tool_call_id": row.get("tool_call_id"), "finish_reason": row.get("finish_reason"),
                             "tool_calls": [{"id": t.get("id"), "name": t.get("name"), "arguments": t.get("arguments")}
                                            for t in indexed(row, "tool_calls")]}, default_role)
                for row in rows]
    return read


CONVENTION = Convention(
    name="openllmetry",
    title="OpenLLMetry",
    kinds=(KindRule(31, span_kind_by("traceloop.span.kind")), KindRule(60, _request_type)),
    messages=(MessagesReader(40, "gen_ai_flat", "OpenLLMetry (flat gen_ai.prompt.*)",
                             _messages("gen_ai.prompt", "user"), _messages("gen_ai.completion", "assistant")),),
)
