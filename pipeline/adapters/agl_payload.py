"""The Triplet payload of one LLM span, in Agent Lightning 0.3's shape (`span_to_triplet`), with
our conventions as fallbacks where Agent Lightning finds nothing (token ids from LiteLLM or
OpenInference, messages from OpenInference / GenAI events / ...), so a span named differently
still gives a full triplet."""

from __future__ import annotations

import json
from typing import Any

import orjson

from spanpipe.semconv.conventions import ALL
from spanpipe.semconv.conventions.agentlightning import LOGPROBS, PROMPT_TOKEN_IDS, RESPONSE_TOKEN_IDS
from spanpipe.semconv.llm_call import TOKEN_IDS_MISSING_REASON, llm_call, response_id
from spanpipe.semconv.values import unflatten


_INT_TYPES = ({int}, {bool}, {int, bool}, set())


_INT32_MIN, _INT32_MAX = -2**31, 2**31 - 1


def _ids(attrs: dict[str, Any], keys: tuple[str, ...]) -> list[int] | None:
    for key in keys:
        v = attrs.get(key)
        if isinstance(v, (list, tuple)) and set(map(type, v)) in _INT_TYPES:
            return list(v)
    return None


def _unflatten_first(by_prefix: dict[str, dict[str, Any]], prefixes: tuple[str, ...]) -> Any:
    for prefix in prefixes:
        flat = by_prefix.get(prefix)
        if flat:
            value = unflatten(flat)
            if value:
                return value
    return None


_PREFIXES = ("gen_ai.request", "agentlightning.operation.input", "gen_ai.response", "agentlightning.operation.output",
             "gen_ai.prompt", "agentlightning.operation.input.messages", "gen_ai.completion",
             "agentlightning.operation.output.choices")


def _split_by_prefix(attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One pass over the keys: {prefix: {rest-of-key: value}} for the prefixes the payload reads."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(("gen_ai.", "agentlightning.operation.")):
            continue
        for prefix in _PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)] == ".":
                out.setdefault(prefix, {})[key[len(prefix) + 1:]] = value
    return out


def openai_style(messages: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Canonical (role + parts) messages → OpenAI chat messages (role, content, tool_calls)."""
    if not messages:
        return None
    out = []
    for m in messages:
        texts = [p.get("content") for p in m.get("parts", []) if p.get("type") == "text"]
        msg: dict[str, Any] = {"role": m.get("role"), "content": "".join(str(t) for t in texts if t is not None)}
        calls = [p for p in m.get("parts", []) if p.get("type") == "tool_call"]
        if calls:
            msg["tool_calls"] = [{"id": c.get("id"), "type": "function", "function": {
                "name": c.get("name"), "arguments": c["arguments"] if isinstance(c.get("arguments"), str)
                else json.dumps(c.get("arguments"))}} for c in calls]
        responses = [p for p in m.get("parts", []) if p.get("type") == "tool_call_response"]
        if responses:
            msg["tool_call_id"] = responses[0].get("id")
            r = responses[0].get("response")
            msg["content"] = r if isinstance(r, str) else orjson.dumps(r).decode()
        if m.get("finish_reason"):
            msg["finish_reason"] = m["finish_reason"]
        out.append(msg)
    return out


def image_urls(raw: Any) -> list[str]:
    if isinstance(raw, list):
        entries = raw
    elif isinstance(raw, dict):
        numeric = sorted((k for k in raw if isinstance(k, str) and k.isdigit()), key=int)
        entries = [raw[k] for k in numeric] if numeric else [raw]
    else:
        return []
    urls = []
    for message in entries:
        if not isinstance(message, dict) or "content" not in message:
            continue
        content = message["content"]
        if isinstance(content, str):
            try:
                content = orjson.loads(content)
            except orjson.JSONDecodeError:
                continue
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    image = part.get("image_url")
                    if isinstance(image, dict) and "url" in image:
                        urls.append(image["url"])
    return urls


def payload(attrs: dict[str, Any], events: list[dict[str, Any]] | None, agent_name: str) -> tuple[dict, dict, dict]:
    """(prompt, response, metadata) of one LLM span."""
    call: dict[str, Any] | None = None

    def normalised() -> dict[str, Any]:
        nonlocal call
        if call is None:
            call = llm_call(attrs, events)
        return call

    prompt_ids = _ids(attrs, PROMPT_TOKEN_IDS)
    response_ids = _ids(attrs, RESPONSE_TOKEN_IDS)
    if prompt_ids is None or response_ids is None:
        prompt_ids = prompt_ids if prompt_ids is not None else normalised()["prompt_token_ids"]
        response_ids = response_ids if response_ids is not None else normalised()["response_token_ids"]
    too_large = next((i for ids in (prompt_ids, response_ids) if ids for i in (min(ids), max(ids))
                      if not _INT32_MIN <= i <= _INT32_MAX), None)
    if too_large is not None:  # not a token id: the call is kept, its ids are not (triplets carry int32)
        prompt_ids = response_ids = None
    by_prefix = _split_by_prefix(attrs)
    request = _unflatten_first(by_prefix, ("gen_ai.request", "agentlightning.operation.input"))
    response_meta = _unflatten_first(by_prefix, ("gen_ai.response", "agentlightning.operation.output"))
    if isinstance(request, dict):
        request.pop("messages", None)
    if isinstance(response_meta, dict):
        for key in ("choices", "prompt_token_ids", "response_token_ids"):
            response_meta.pop(key, None)
    prompt_raw = _unflatten_first(by_prefix, ("gen_ai.prompt", "agentlightning.operation.input.messages"))
    if prompt_raw is None:
        prompt_raw = openai_style(normalised()["input_messages"])
    completion_raw = _unflatten_first(by_prefix, ("gen_ai.completion", "agentlightning.operation.output.choices"))
    if completion_raw is None:
        completion_raw = openai_style(normalised()["output_messages"])
    prompt = {"token_ids": prompt_ids or [], "raw_content": prompt_raw, "image_urls": image_urls(prompt_raw)}
    response: dict[str, Any] = {"token_ids": response_ids or [], "raw_content": completion_raw}
    logprobs = attrs.get(LOGPROBS)
    if isinstance(logprobs, str):
        response["logprobs"] = orjson.loads(logprobs)
    elif isinstance(logprobs, list):
        response["logprobs"] = logprobs
    rid = response_id(attrs, llm=True)
    if rid is None:
        rid = normalised()["response_id"]
    metadata = {"request": request, "response": response_meta, "response_id": rid}
    if too_large is not None:
        metadata["token_ids_missing_reason"] = (f"token_ids_out_of_range: the span's token ids include {too_large}, "
                                                "which is not a 32-bit token id; they were left out")
    elif not prompt_ids or not response_ids:
        metadata["token_ids_missing_reason"] = token_ids_missing_reason(
            attrs, bool(prompt_ids), bool(response_ids), normalised()["convention"])
    metadata["agent_name"] = agent_name  # last: the bulk reader appends it to the stored head
    return prompt, response, metadata


# `llm_calls.convention` → how users know it.
CONVENTION_NAMES = {**{r.label: r.title for c in ALL for r in c.messages}, "unknown": "this instrumentation"}


def token_ids_missing_reason(attrs: dict[str, Any], has_prompt: bool, has_response: bool,
                             convention: str = "unknown") -> str:
    """Why a call's triplet has no (or half its) token ids: the llm_gateway's own word when the call
    went through it, else which convention recorded it without them and how to get them."""
    reason = attrs.get(TOKEN_IDS_MISSING_REASON)
    if isinstance(reason, str) and reason:
        return reason
    missing = "prompt and response" if not has_prompt and not has_response else \
        "prompt" if not has_prompt else "response"
    return (f"no_token_ids_recorded: {CONVENTION_NAMES.get(convention, convention)} records no {missing} token ids; "
            "route the agent's LLM calls through the llm_gateway receiver to record them")
