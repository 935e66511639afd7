"""One LLM call, whatever instrumentation recorded it: messages in one canonical shape (OTel GenAI's
role + parts), usage, models, token ids. This is what the `llm_calls` view and the adapters read.

Messages, first hit wins: `gen_ai.input.messages` (+ `gen_ai.system_instructions`) →
OpenInference `llm.input_messages.<i>.message.*` → OpenLLMetry `gen_ai.prompt.<i>.*` → GenAI span
events (`gen_ai.user.message`, ...) → OpenInference `input.value` JSON → Logfire `request_data`.
Outputs likewise. Usage never reads `gen_ai.aggregated_usage.*` (an agent's total, not this call's).
"""

from __future__ import annotations

from typing import Any

from spanpipe.semconv.values import first_present, indexed, int_list, loose

Message = dict[str, Any]

# Agent Lightning's response id: the first of these keys holding a string (what triplets are
# deduplicated on, what the reward processor stores in the `response_id` column).
RESPONSE_ID = ("gen_ai.response.id", "agentlightning.operation.output.id")

# The instrumentation scope of the llm_gateway receiver's spans. A client-side LLM span with the
# same response id (in the same rollout) is the same call: the gateway's span, which carries the
# token ids, stands for it in `llm_calls`, triplets and messages.
GATEWAY_SCOPE = "spanpipe.llm_gateway"
# Why a call has no token ids, in words (the gateway sets it; triplets carry it in their metadata).
TOKEN_IDS_MISSING_REASON = "spanpipe.token_ids.missing_reason"


def response_id(attrs: dict[str, Any], llm: bool = False) -> str | None:
    """The first RESPONSE_ID key holding a string; for an LLM span (`llm`) also the `id` of an
    OpenInference `output.value` response document (parsed only when it holds an "id" key)."""
    for key in RESPONSE_ID:
        if isinstance(attrs.get(key), str):
            return attrs[key]
    if llm:
        out = attrs.get("output.value")
        if isinstance(out, str) and out.startswith("{") and '"id"' in out:
            value = loose(out)
            if isinstance(value, dict) and isinstance(value.get("id"), str):
                return value["id"]
    return None


OPERATION_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
INPUT_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}


def _text(value: Any) -> Any:
    return value if isinstance(value, str) else loose(value)


def _parts_from_content(content: Any) -> list[dict[str, Any]]:
    content = loose(content)
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, dict):
        content = [content]
    parts = []
    if isinstance(content, list):
        for p in content:
            if isinstance(p, str):
                parts.append({"type": "text", "content": p})
            elif isinstance(p, dict):
                kind = p.get("type")
                if kind in ("text", "input_text", "output_text") or (kind is None and "text" in p):
                    parts.append({"type": "text", "content": p.get("text", p.get("content"))})
                elif kind == "image_url":
                    url = p.get("image_url")
                    parts.append({"type": "uri", "modality": "image",
                                  "uri": url.get("url") if isinstance(url, dict) else url})
                else:
                    parts.append(p)
    else:
        parts.append({"type": "text", "content": str(content)})
    return parts


def _tool_call(tc: dict[str, Any]) -> dict[str, Any]:
    fn = tc.get("function") if isinstance(tc.get("function"), dict) else tc
    return {"type": "tool_call", "id": tc.get("id"), "name": fn.get("name"), "arguments": loose(fn.get("arguments"))}


def from_openai(m: Any, default_role: str = "user") -> Message | None:
    """An OpenAI-shaped message dict (or an already canonical one) → canonical."""
    m = loose(m)
    if isinstance(m, str):
        return {"role": default_role, "parts": [{"type": "text", "content": m}]}
    if not isinstance(m, dict):
        return None
    role = m.get("role") or default_role
    if isinstance(m.get("parts"), list):
        msg: Message = {"role": role, "parts": m["parts"]}
    elif role == "tool":
        msg = {"role": role, "parts": [{"type": "tool_call_response", "id": m.get("tool_call_id", m.get("id")),
                                        "response": _text(m.get("content"))}]}
    else:
        parts = _parts_from_content(m.get("content"))
        for tc in loose(m.get("tool_calls")) or []:
            if isinstance(tc, dict):
                parts.append(_tool_call(tc))
        msg = {"role": role, "parts": parts}
    if m.get("finish_reason"):
        msg["finish_reason"] = m["finish_reason"]
    return msg


def _canonical_list(items: Any, default_role: str) -> list[Message] | None:
    items = loose(items)
    if isinstance(items, dict):
        items = items.get("messages", [items])
    if not isinstance(items, list):
        return None
    out = [m for m in (from_openai(i, default_role) for i in items) if m is not None]
    return out or None


def _openinference(attrs: dict[str, Any], prefix: str, default_role: str) -> list[Message] | None:
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


def _openllmetry(attrs: dict[str, Any], prefix: str, default_role: str) -> list[Message] | None:
    rows = indexed(attrs, prefix)
    if not rows:
        return None
    out = []
    for row in rows:
        m = {"role": row.get("role") or default_role, "content": row.get("content"),
             "tool_call_id": row.get("tool_call_id"), "finish_reason": row.get("finish_reason"),
             "tool_calls": [{"id": t.get("id"), "name": t.get("name"), "arguments": t.get("arguments")}
                            for t in indexed(row, "tool_calls")]}
        out.append(from_openai(m, default_role))
    return out


def _event_messages(events: list[dict[str, Any]] | None) -> tuple[list[Message] | None, list[Message] | None]:
    inputs, outputs = [], []
    for ev in events or ():
        name, attrs = ev.get("name"), ev.get("attributes") or {}
        if name in INPUT_EVENTS:
            m = {"role": attrs.get("role") or INPUT_EVENTS[name], "content": attrs.get("content"),
                 "tool_calls": attrs.get("tool_calls"), "tool_call_id": attrs.get("id")}
            inputs.append(from_openai(m))
        elif name == "gen_ai.choice":
            message = loose(attrs.get("message")) or {}
            if not isinstance(message, dict):
                message = {"content": message}
            m = {"role": message.get("role") or "assistant", **message,
                 "finish_reason": attrs.get("finish_reason")}
            outputs.append(from_openai(m, "assistant"))
    return inputs or None, outputs or None


def _json_attr(attrs: dict[str, Any], key: str) -> dict[str, Any]:
    value = loose(attrs.get(key))
    return value if isinstance(value, dict) else {}


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    return first_present(keys, attrs)


def _int(value: Any) -> int | None:
    value = loose(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    return None


def _operation_details(events: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The attributes of the call's `gen_ai.client.inference.operation.details` event: where the
    latest GenAI conventions put message content when it is not on the span (as structured values
    or JSON strings)."""
    for ev in events or ():
        if ev.get("name") == OPERATION_DETAILS_EVENT:
            return ev.get("attributes") or {}
    return {}


def _genai_input(attrs: dict[str, Any]) -> list[Message] | None:
    msgs = _canonical_list(attrs.get("gen_ai.input.messages"), "user")
    if msgs is not None:
        system = loose(attrs.get("gen_ai.system_instructions"))
        if system:
            msgs = [{"role": "system", "parts": _parts_from_content(system)}, *msgs]
    return msgs


def input_messages(attrs: dict[str, Any], events: list[dict[str, Any]] | None) -> tuple[list[Message] | None, str | None]:
    msgs = _genai_input(attrs)
    if msgs is not None:
        return msgs, "gen_ai"
    msgs = _genai_input(_operation_details(events))
    if msgs is not None:
        return msgs, "gen_ai_events"
    for fn, prefix, conv in ((_openinference, "llm.input_messages", "openinference"),
                             (_openllmetry, "gen_ai.prompt", "gen_ai_flat")):
        msgs = fn(attrs, prefix, "user")
        if msgs is not None:
            return msgs, conv
    ev_in, _ = _event_messages(events)
    if ev_in is not None:
        return ev_in, "gen_ai_events"
    value = _json_attr(attrs, "input.value")
    if "messages" in value:
        return _canonical_list(value["messages"], "user"), "openinference"
    request = _json_attr(attrs, "request_data")
    if "messages" in request:
        return _canonical_list(request["messages"], "user"), "logfire"
    return None, None


def output_messages(attrs: dict[str, Any], events: list[dict[str, Any]] | None) -> tuple[list[Message] | None, str | None]:
    msgs = _canonical_list(attrs.get("gen_ai.output.messages"), "assistant")
    if msgs is not None:
        return msgs, "gen_ai"
    msgs = _canonical_list(_operation_details(events).get("gen_ai.output.messages"), "assistant")
    if msgs is not None:
        return msgs, "gen_ai_events"
    for fn, prefix, conv in ((_openinference, "llm.output_messages", "openinference"),
                             (_openllmetry, "gen_ai.completion", "gen_ai_flat")):
        msgs = fn(attrs, prefix, "assistant")
        if msgs is not None:
            return msgs, conv
    _, ev_out = _event_messages(events)
    if ev_out is not None:
        return ev_out, "gen_ai_events"
    for key, conv in (("output.value", "openinference"), ("response_data", "logfire")):
        value = _json_attr(attrs, key)
        choices = value.get("choices")
        if isinstance(choices, list):
            return [from_openai({"role": "assistant", **(c.get("message") or {}),
                                 "finish_reason": c.get("finish_reason")}, "assistant")
                    for c in choices if isinstance(c, dict)], conv
        if isinstance(value.get("message"), dict):
            return [from_openai({"role": "assistant", **value["message"]}, "assistant")], conv
        if isinstance(value.get("combined_chunk_content"), str):  # an older Logfire's streamed answer
            return [from_openai({"role": "assistant", "content": value["combined_chunk_content"]}, "assistant")], conv
    return None, None


def token_ids(attrs: dict[str, Any]) -> tuple[list[int] | None, list[int] | None, Any]:
    """(prompt_token_ids, response_token_ids, response_logprobs) from every convention we know."""
    prompt = None
    for key in ("prompt_token_ids", "agentlightning.operation.output.prompt_token_ids",
                "llm.hosted_vllm.prompt_token_ids"):
        prompt = int_list(attrs.get(key))
        if prompt is not None:
            break
    response = None
    for key in ("response_token_ids", "agentlightning.operation.output.response_token_ids.0",
                "agentlightning.operation.output.choices.0.token_ids",
                "agentlightning.operation.output.choices.0.provider_specific_fields.token_ids"):
        response = int_list(attrs.get(key))
        if response is not None:
            break
    if response is None:
        nested = loose(attrs.get("llm.hosted_vllm.response_token_ids"))
        if isinstance(nested, list) and nested and isinstance(nested[0], list):
            response = int_list(nested[0])
    if response is None:
        choices = loose(attrs.get("llm.hosted_vllm.choices"))
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            response = int_list(choices[0].get("token_ids"))
    logprobs = loose(attrs.get("logprobs.content"))
    out = _json_attr(attrs, "output.value")
    if out:
        if prompt is None:
            prompt = int_list(out.get("prompt_token_ids"))
        choices = out.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            if response is None:
                response = int_list(choices[0].get("token_ids"))
            if logprobs is None and isinstance(choices[0].get("logprobs"), dict):
                logprobs = choices[0]["logprobs"].get("content")
    return prompt, response, logprobs


def llm_call(attrs: dict[str, Any], events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The `llm_calls` fields of one LLM span (attributes as a dict, events as stored)."""
    inputs, in_conv = input_messages(attrs, events)
    outputs, out_conv = output_messages(attrs, events)
    out_value = _json_attr(attrs, "output.value")
    invocation = _json_attr(attrs, "llm.invocation_parameters")
    prompt_ids, response_ids, logprobs = token_ids(attrs)
    return {
        "provider": _first(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
        "request_model": _first(attrs, "gen_ai.request.model") or invocation.get("model") or attrs.get("llm.model_name"),
        "response_model": _first(attrs, "gen_ai.response.model", "llm.model_name") or out_value.get("model"),
        "response_id": _first(attrs, "gen_ai.response.id", "agentlightning.operation.output.id") or out_value.get("id"),
        "agent_name": _first(attrs, "gen_ai.agent.name", "agent.name"),
        "input_messages": inputs,
        "output_messages": outputs,
        "input_tokens": _int(_first(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                                    "llm.token_count.prompt")),
        "output_tokens": _int(_first(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                                     "llm.token_count.completion")),
        "prompt_token_ids": prompt_ids,
        "response_token_ids": response_ids,
        "response_logprobs": logprobs,
        "convention": in_conv or out_conv or "unknown",
    }
