"""The canonical message shape every convention's reader produces (OTel GenAI's role + parts), and
the OpenAI shapes most conventions record messages in."""

from __future__ import annotations

from typing import Any

from spanpipe.semconv.convention import Attrs, Message
from spanpipe.semconv.values import loose


def json_attr(attrs: Attrs, key: str) -> dict[str, Any]:
    """Attribute `key` as a JSON object ({} when it is not one)."""
    value = loose(attrs.get(key))
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> Any:
    return value if isinstance(value, str) else loose(value)


def parts_from_content(content: Any) -> list[dict[str, Any]]:
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
        parts = parts_from_content(m.get("content"))
        for tc in loose(m.get("tool_calls")) or []:
            if isinstance(tc, dict):
                parts.append(_tool_call(tc))
        msg = {"role": role, "parts": parts}
    if m.get("finish_reason"):
        msg["finish_reason"] = m["finish_reason"]
    return msg


def canonical_list(items: Any, default_role: str) -> list[Message] | None:
    """A list of OpenAI-shaped (or canonical) messages, or a `{"messages": [...]}` document."""
    items = loose(items)
    if isinstance(items, dict):
        items = items.get("messages", [items])
    if not isinstance(items, list):
        return None
    out = [m for m in (from_openai(i, default_role) for i in items) if m is not None]
    return out or None


def request_messages(document: dict[str, Any]) -> list[Message] | None:
    """The messages of an OpenAI request document."""
    return canonical_list(document["messages"], "user") if "messages" in document else None


def answer_messages(document: dict[str, Any]) -> list[Message] | None:
    """The answer in an OpenAI response document: its choices, a single message, or the combined
    text of a streamed answer (older Logfire)."""
    choices = document.get("choices")
    if isinstance(choices, list):
        return [from_openai({"role": "assistant", **(c.get("message") or {}),
                             "finish_reason": c.get("finish_reason")}, "assistant")
                for c in choices if isinstance(c, dict)]
    if isinstance(document.get("message"), dict):
        return [from_openai({"role": "assistant", **document["message"]}, "assistant")]
    if isinstance(document.get("combined_chunk_content"), str):
        return [from_openai({"role": "assistant", "content": document["combined_chunk_content"]}, "assistant")]
    return None
