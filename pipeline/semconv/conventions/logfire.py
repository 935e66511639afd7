"""Pydantic Logfire's OpenAI / Anthropic instrumentation: a call span holding `request_data` (and
`response_data` in older releases) beside `gen_ai.*` keys; a streamed call adds a sibling
`streaming response from …` span written when the stream has been read, holding the answer (the
warehouse views pair the two: `views.is_stream_sibling_sql`)."""

from __future__ import annotations

from spanpipe.semconv.convention import Attrs, Convention, KindRule, MessagesReader
from spanpipe.semconv.messages import answer_messages, json_attr, request_messages

STREAM_PREFIX = "streaming response from"
REQUEST_KEY = "request_data"


def _stream_sibling(name: str, attrs: Attrs) -> str | None:
    return "other" if name.startswith(STREAM_PREFIX) and REQUEST_KEY in attrs else None


def _call_span(name: str, attrs: Attrs) -> str | None:
    return "llm" if REQUEST_KEY in attrs and "gen_ai.system" in attrs and not name.startswith(STREAM_PREFIX) else None


CONVENTION = Convention(
    name="logfire",
    title="Logfire",
    kinds=(KindRule(20, _stream_sibling), KindRule(70, _call_span)),
    messages=(MessagesReader(70, "logfire", "Logfire", lambda a, e: request_messages(json_attr(a, REQUEST_KEY)),
                             lambda a, e: answer_messages(json_attr(a, "response_data"))),),
)
