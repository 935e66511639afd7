"""OpenInference (Arize Phoenix's instrumentations): `openinference.span.kind`, indexed
`llm.input_messages.<i>.message.*` / `llm.output_messages.<i>.message.*`, `input.value` /
`output.value` documents, `llm.token_count.*`, and rewards as `annotations.<i>.annotation.*`."""

from __future__ import annotations

import re
from typing import Any

from spanpipe.semconv.convention import (Attrs, Convention, Dimension, Events, Field, KindRule, Malformed, Message,
                                         MessagesReader, RewardRule, TokenIds, reward_number)
from spanpipe.semconv.messages import answer_messages, from_openai, json_attr, request_messages
from spanpipe.semconv.values import indexed, int_list

SOURCE = "openinference"
_ANNOTATION = re.compile(r"^annotations\.(\d+)\.annotation\.(score|name)$")
_FIRST = ("annotations.0.annotation.score", "annotations.0.annotation.name")  # a reward has a dimension 0
_KINDS = {"LLM": "llm", "TOOL": "tool", "AGENT": "agent", "CHAIN": "agent"}


def _kind(name: str, attrs: Attrs) -> str | None:
    kind = attrs.get("openinference.span.kind")
    return None if kind is None else _KINDS.get(str(kind).upper())


def _messages(prefix: str, default_role: str):
    def read(attrs: Attrs, events: Events) -> list[Message] | None:
        rows = indexed(attrs, prefix)
        if not rows:
            return None
        out = []
        for row in rows:
            m: dict[str, Any] = {"role": row.get("message.role") or default_role,
                                 "tool_call_id": row.get("message.tool_call_id")}
            if "message.content" in row:
                m["content"] = row["message.content"]
            else:
                m["content"] = [{"type": c.get("message_content.type", "text"), "text": c.get("message_content.text"),
                                 **({"image_url": {"url": c["message_content.image.image.url"]}}
                                    if "message_content.image.image.url" in c else {})}
                                for c in indexed(row, "message.contents")]
            m["tool_calls"] = [{"id": t.get("tool_call.id"), "function": {
                "name": t.get("tool_call.function.name"), "arguments": t.get("tool_call.function.arguments")}}
                for t in indexed(row, "message.tool_calls")]
            out.append(from_openai(m, default_role))
        return out
    return read


def _token_ids(attrs: Attrs) -> TokenIds:
    out = json_attr(attrs, "output.value")
    if not out:
        return TokenIds()
    response = logprobs = None
    choices = out.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        response = int_list(choices[0].get("token_ids"))
        if isinstance(choices[0].get("logprobs"), dict):
            logprobs = choices[0]["logprobs"].get("content")
    return TokenIds(int_list(out.get("prompt_token_ids")), response, logprobs)


def _annotations(name: str, attrs: Attrs, events: Events) -> list[Dimension]:
    dims: dict[int, dict[str, Any]] = {}
    for k, v in attrs.items():
        m = _ANNOTATION.match(k)
        if m:
            dims.setdefault(int(m.group(1)), {})[m.group(2)] = v
    if sorted(dims) != list(range(len(dims))):  # a list, as Agent Lightning's reward keys must be
        raise Malformed(f"{SOURCE} annotations are not numbered 0, 1, …: {sorted(dims)}")
    out = []
    for idx in sorted(dims):
        d = dims[idx]
        if "score" not in d:
            raise Malformed(f"{SOURCE} dimension {idx} has a name but no value")
        if not isinstance(d.get("name"), str) or not d["name"]:
            raise Malformed(f"{SOURCE} dimension {idx} has no name")
        value = reward_number(d["score"], f"{SOURCE} dimension {idx}")
        out.append({"name": d["name"], "value": value, "source": SOURCE})
    return out


CONVENTION = Convention(
    name="openinference",
    title="OpenInference",
    kinds=(KindRule(40, _kind),),
    messages=(
        MessagesReader(30, "openinference", "OpenInference", _messages("llm.input_messages", "user"),
                       _messages("llm.output_messages", "assistant")),
        MessagesReader(60, "openinference", "OpenInference", lambda a, e: request_messages(json_attr(a, "input.value")),
                       lambda a, e: answer_messages(json_attr(a, "output.value"))),
    ),
    provider=(Field("llm.provider"), Field("llm.system")),
    request_model=(Field("llm.invocation_parameters", "model"), Field("llm.model_name")),
    response_model=(Field("llm.model_name"), Field("output.value", "model")),
    response_id_on_llm_spans=(Field("output.value", "id"),),
    input_tokens=("llm.token_count.prompt",),
    output_tokens=("llm.token_count.completion",),
    token_ids=_token_ids,
    rewards=RewardRule(40, lambda name, attrs, events: _FIRST[0] in attrs or _FIRST[1] in attrs, _annotations),
)
