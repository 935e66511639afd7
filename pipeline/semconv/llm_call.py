"""One LLM call, whatever instrumentation recorded it: messages in one canonical shape (OTel GenAI's
role + parts), usage, models, token ids — read by the rules of every convention
(`semconv.conventions`). This is what the `llm_calls` view and the adapters read.

Messages: the readers of all conventions by rank, first hit wins (inputs and outputs separately).
Usage never reads `gen_ai.aggregated_usage.*` (an agent's total, not this call's).
"""

from __future__ import annotations

from typing import Any

from spanpipe.semconv.agents import agent_name
from spanpipe.semconv.convention import Attrs, Events, Field, Message, MessagesReader
from spanpipe.semconv.conventions import ALL
from spanpipe.semconv.messages import from_openai
from spanpipe.semconv.values import first_present, loose

__all__ = ["GATEWAY_SCOPE", "TOKEN_IDS_MISSING_REASON", "RESPONSE_ID", "from_openai", "llm_call", "response_id",
           "token_ids", "input_messages", "output_messages"]

# The instrumentation scope of the llm_gateway receiver's spans. A client-side LLM span with the
# same response id (in the same rollout) is the same call: the gateway's span, which carries the
# token ids, stands for it in `llm_calls`, triplets and messages.
GATEWAY_SCOPE = "spanpipe.llm_gateway"
# Why a call has no token ids, in words (the gateway sets it; triplets carry it in their metadata).
TOKEN_IDS_MISSING_REASON = "spanpipe.token_ids.missing_reason"

_READERS: tuple[MessagesReader, ...] = tuple(sorted((r for c in ALL for r in c.messages), key=lambda r: r.rank))
_INPUTS = tuple((r.inputs, r.label) for r in _READERS if r.inputs is not None)
_OUTPUTS = tuple((r.outputs, r.label) for r in _READERS if r.outputs is not None)
_TOKEN_READERS = tuple(c.token_ids for c in ALL if c.token_ids is not None)


def _fields(attr: str) -> tuple[Field, ...]:
    return tuple(f for c in ALL for f in getattr(c, attr))


_PROVIDER, _REQUEST_MODEL, _RESPONSE_MODEL = _fields("provider"), _fields("request_model"), _fields("response_model")
_RESPONSE_ID, _RESPONSE_ID_LLM = _fields("response_id"), _fields("response_id_on_llm_spans")
INPUT_TOKEN_KEYS: tuple[str, ...] = tuple(k for c in ALL for k in c.input_tokens)
OUTPUT_TOKEN_KEYS: tuple[str, ...] = tuple(k for c in ALL for k in c.output_tokens)

# The attributes holding a response id on any span (what triplets are deduplicated on, what the
# reward processor stores in the `response_id` column); SQL reads them by name.
RESPONSE_ID: tuple[str, ...] = tuple(f.key for f in _RESPONSE_ID if f.json_field is None)


def _value(attrs: Attrs, field: Field, documents: dict[str, Any]) -> Any:
    if field.json_field is None:
        return attrs.get(field.key)
    if field.key not in documents:
        value = loose(attrs.get(field.key))
        documents[field.key] = value if isinstance(value, dict) else {}
    return documents[field.key].get(field.json_field)


def _first(attrs: Attrs, fields: tuple[Field, ...], documents: dict[str, Any], only_str: bool = False) -> Any:
    """The first field that is set (not None, not ""; a str with `only_str`)."""
    for field in fields:
        if field.json_field is not None and field.key not in attrs:
            continue
        value = _value(attrs, field, documents)
        if (isinstance(value, str) if only_str else value is not None and value != ""):
            return value
    return None


def response_id(attrs: Attrs, llm: bool = False) -> str | None:
    """The model server's response id: the first RESPONSE_ID attribute holding a string; for an LLM
    span (`llm`) also the conventions' response documents (parsed only when they hold an "id" key)."""
    for key in RESPONSE_ID:
        if isinstance(attrs.get(key), str):
            return attrs[key]
    if llm:
        for field in _RESPONSE_ID_LLM:
            raw = attrs.get(field.key)
            if isinstance(raw, str) and raw.startswith("{") and f'"{field.json_field}"' in raw:
                value = loose(raw)
                if isinstance(value, dict) and isinstance(value.get(field.json_field), str):
                    return value[field.json_field]
    return None


def _messages(readers: tuple, attrs: Attrs, events: Events) -> tuple[list[Message] | None, str | None]:
    for read, label in readers:
        msgs = read(attrs, events)
        if msgs is not None:
            return msgs, label
    return None, None


def input_messages(attrs: Attrs, events: Events) -> tuple[list[Message] | None, str | None]:
    return _messages(_INPUTS, attrs, events)


def output_messages(attrs: Attrs, events: Events) -> tuple[list[Message] | None, str | None]:
    return _messages(_OUTPUTS, attrs, events)


def token_ids(attrs: Attrs) -> tuple[list[int] | None, list[int] | None, Any]:
    """(prompt_token_ids, response_token_ids, response_logprobs): each the first a convention gives."""
    prompt = response = logprobs = None
    for read in _TOKEN_READERS:
        found = read(attrs)
        prompt = found.prompt if prompt is None else prompt
        response = found.response if response is None else response
        logprobs = found.logprobs if logprobs is None else logprobs
        if prompt is not None and response is not None and logprobs is not None:
            break
    return prompt, response, logprobs


def _int(value: Any) -> int | None:
    value = loose(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    return None


def llm_call(attrs: Attrs, events: Events = None) -> dict[str, Any]:
    """The `llm_calls` fields of one LLM span (attributes as a dict, events as stored)."""
    inputs, in_conv = input_messages(attrs, events)
    outputs, out_conv = output_messages(attrs, events)
    prompt_ids, response_ids, logprobs = token_ids(attrs)
    documents: dict[str, Any] = {}
    return {
        "provider": _first(attrs, _PROVIDER, documents),
        "request_model": _first(attrs, _REQUEST_MODEL, documents),
        "response_model": _first(attrs, _RESPONSE_MODEL, documents),
        "response_id": _first(attrs, _RESPONSE_ID + _RESPONSE_ID_LLM, documents),
        "agent_name": agent_name("", attrs),
        "input_messages": inputs,
        "output_messages": outputs,
        "input_tokens": _int(first_present(INPUT_TOKEN_KEYS, attrs)),
        "output_tokens": _int(first_present(OUTPUT_TOKEN_KEYS, attrs)),
        "prompt_token_ids": prompt_ids,
        "response_token_ids": response_ids,
        "response_logprobs": logprobs,
        "convention": in_conv or out_conv or "unknown",
    }
