"""LangSmith's OpenTelemetry export: `langsmith.span.kind` (llm, tool, chain, ...)."""

from __future__ import annotations

from spanpipe.semconv.convention import Attrs, Convention, KindRule

_KINDS = {"llm": "llm", "tool": "tool", "chain": "agent"}


def _kind(name: str, attrs: Attrs) -> str | None:
    if "langsmith.span.kind" not in attrs:
        return None
    return _KINDS.get(str(attrs["langsmith.span.kind"]).lower(), "other")


CONVENTION = Convention(name="langsmith", title="LangSmith", kinds=(KindRule(15, _kind),))
