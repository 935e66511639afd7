"""One proxied LLM call, as the gateway learns it: the request, then the response — whole, or
chunk by chunk from a stream — and finally the span attributes that record it.

Field names are vLLM's OpenAI server's (`prompt_token_ids` on the chat response or its first
chunk, and on each completions choice; `token_ids` on each choice and each chunk's choice;
chat logprobs as `choices[].logprobs.content[]`, completions logprobs as `tokens` /
`token_logprobs`). Token data is recorded for choice 0, as Agent Lightning does; all choices'
text goes into `gen_ai.output.messages`.

The span is OTel GenAI (latest conventions) plus Agent Lightning's token keys
(`prompt_token_ids`, `response_token_ids`) and `logprobs.content` (OpenAI's chat logprob form,
whichever endpoint was called), which is what `llm_calls`, the triplet and messages adapters read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from spanpipe.semconv.llm_call import TOKEN_IDS_MISSING_REASON, from_openai

Operation = Literal["chat", "text_completion"]

# Why a call has no token ids (TOKEN_IDS_MISSING_REASON).
NOT_REQUESTED = "not_requested: request_token_ids is off and the client did not ask for return_token_ids"
UPSTREAM_SENT_NONE = ("upstream_sent_none: the upstream returned no prompt_token_ids/token_ids "
                      "(vLLM >= 0.10.2 returns them for return_token_ids: true)")
NO_RESPONSE = "no_response: the call failed before the upstream answered"
SGLANG_STREAM = ("not_requested: SGLang returns token ids only for non-streamed calls "
                 "(it refuses return_prompt_token_ids with stream: true)")

_SAMPLING_PARAMS = {"temperature": "gen_ai.request.temperature", "top_p": "gen_ai.request.top_p",
                    "max_tokens": "gen_ai.request.max_tokens", "max_completion_tokens": "gen_ai.request.max_tokens",
                    "frequency_penalty": "gen_ai.request.frequency_penalty",
                    "presence_penalty": "gen_ai.request.presence_penalty", "seed": "gen_ai.request.seed",
                    "top_k": "gen_ai.request.top_k", "n": "gen_ai.request.choice.count"}


def _int_list(value: Any) -> list[int] | None:
    if type(value) is list and (not value or set(map(type, value)) == {int}):  # one C-level pass
        return value
    return None


@dataclass
class Choice:
    """What one choice accumulates over a response or a stream."""

    text: list[str] = field(default_factory=list)
    role: str = "assistant"
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    token_ids: list[int] | None = None
    logprobs: list[dict[str, Any]] | None = None

    def add_token_ids(self, ids: Any) -> None:
        ids = _int_list(ids)
        if ids is not None:
            self.token_ids = ids if self.token_ids is None else self.token_ids + ids

    def add_logprobs(self, entries: list[dict[str, Any]]) -> None:
        self.logprobs = entries if self.logprobs is None else self.logprobs + entries

    def add_tool_call_delta(self, delta: dict[str, Any]) -> None:
        k = delta.get("index", len(self.tool_calls))
        call = self.tool_calls.setdefault(k, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        if delta.get("id"):
            call["id"] = delta["id"]
        fn = delta.get("function") or {}
        if fn.get("name"):
            call["function"]["name"] += fn["name"]
        if isinstance(fn.get("arguments"), str):
            call["function"]["arguments"] += fn["arguments"]

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": self.role, "content": "".join(self.text)}
        if self.tool_calls:
            msg["tool_calls"] = [self.tool_calls[k] for k in sorted(self.tool_calls)]
        return msg


def completion_logprobs_as_chat(lp: dict[str, Any]) -> list[dict[str, Any]]:
    """Completions logprobs (`tokens`, `token_logprobs`) in chat's `content[]` form."""
    tokens, values = lp.get("tokens") or [], lp.get("token_logprobs") or []
    return [{"token": t, "logprob": v} for t, v in zip(tokens, values)]


class Call:
    """Built from the client's request body; fed the upstream's answer; read as span attributes."""

    def __init__(self, operation: Operation, request: dict[str, Any], stream: bool) -> None:
        self.operation = operation
        self.request = request
        self.stream = stream
        self.choices: dict[int, Choice] = {}
        self.prompt_token_ids: list[int] | None = None
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.usage: dict[str, Any] | None = None
        self.token_ids_requested = False
        self.missing_reason_if_none = NOT_REQUESTED  # what to say when no ids came and none were asked for
        self._buffer = b""

    def choice(self, index: Any) -> Choice:
        return self.choices.setdefault(index if isinstance(index, int) else 0, Choice())

    # ---- the answer --------------------------------------------------------------------------
    def add_response(self, body: dict[str, Any]) -> None:
        """A whole (non-streamed) response, or one parsed stream chunk."""
        if isinstance(body.get("id"), str):
            self.response_id = body["id"]
        if isinstance(body.get("model"), str):
            self.response_model = body["model"]
        if isinstance(body.get("usage"), dict):
            self.usage = body["usage"]
        if self.prompt_token_ids is None:
            self.prompt_token_ids = _int_list(body.get("prompt_token_ids"))
        for c in body.get("choices") or ():
            if isinstance(c, dict):
                self._add_choice(c)

    def _add_choice(self, c: dict[str, Any]) -> None:
        choice = self.choice(c.get("index"))
        if c.get("finish_reason"):
            choice.finish_reason = c["finish_reason"]
        choice.add_token_ids(c.get("token_ids"))
        if self.prompt_token_ids is None:
            self.prompt_token_ids = _int_list(c.get("prompt_token_ids"))
        meta = c.get("meta_info")
        if isinstance(meta, dict):
            self._add_sglang_meta(choice, meta)
        lp = c.get("logprobs")
        if isinstance(lp, dict) and (choice.logprobs is None or not isinstance(meta, dict)):
            if isinstance(lp.get("content"), list):
                choice.add_logprobs(lp["content"])
            elif isinstance(lp.get("token_logprobs"), list):
                choice.add_logprobs(completion_logprobs_as_chat(lp))
        message = c.get("message") if isinstance(c.get("message"), dict) else c.get("delta")
        if isinstance(message, dict):
            if isinstance(message.get("role"), str):
                choice.role = message["role"]
            if isinstance(message.get("content"), str):
                choice.text.append(message["content"])
            for k, tc in enumerate(message.get("tool_calls") or ()):
                if isinstance(tc, dict):
                    choice.add_tool_call_delta(tc if "index" in tc else {**tc, "index": k})
        elif isinstance(c.get("text"), str):
            choice.text.append(c["text"])

    @staticmethod
    def _add_sglang_meta(choice: Choice, meta: dict[str, Any]) -> None:
        """SGLang (>= 0.5.13, `return_meta_info`): `meta_info.output_token_logprobs` entries are
        `[logprob, token_id, text]` or `{"logprob", "token_id"}`; else `meta_info.output_ids`."""
        entries = meta.get("output_token_logprobs")
        if isinstance(entries, list) and entries:
            ids, lps = [], []
            for e in entries:
                if isinstance(e, dict):
                    tid, lp, text = e.get("token_id", e.get("id")), e.get("logprob"), e.get("token")
                elif isinstance(e, list) and len(e) >= 2:
                    lp, tid, text = e[0], e[1], e[2] if len(e) > 2 else None
                else:
                    return
                if not isinstance(tid, int):
                    return
                ids.append(tid)
                lps.append({"token": text, "logprob": lp})
            choice.add_token_ids(ids)
            choice.add_logprobs(lps)
        elif meta.get("output_ids") is not None:
            choice.add_token_ids(meta.get("output_ids"))

    def feed_sse(self, data: bytes) -> None:
        """Bytes of an SSE stream as they arrive (any split); each complete `data:` event is added."""
        self._buffer += data
        while True:
            cut = self._buffer.find(b"\n")
            if cut < 0:
                return
            line, self._buffer = self._buffer[:cut].rstrip(b"\r"), self._buffer[cut + 1:]
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload and payload != b"[DONE]":
                    try:
                        event = orjson.loads(payload)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(event, dict):
                        self.add_response(event)

    # ---- the span ----------------------------------------------------------------------------
    def input_messages(self) -> list[dict[str, Any]]:
        if self.operation == "chat":
            msgs = self.request.get("messages")
            return [m for m in (from_openai(m) for m in msgs) if m is not None] if isinstance(msgs, list) else []
        prompt = self.request.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompt = "\n".join(prompt)
        if isinstance(prompt, str):
            return [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
        return []

    def output_messages(self) -> list[dict[str, Any]]:
        out = []
        for k in sorted(self.choices):
            c = self.choices[k]
            msg = from_openai(c.message(), "assistant") or {"role": "assistant", "parts": []}
            msg["finish_reason"] = c.finish_reason or "error"
            out.append(msg)
        return out

    def token_missing_reason(self, answered: bool) -> str | None:
        first = self.choices.get(0)
        if self.prompt_token_ids is not None and first is not None and first.token_ids is not None:
            return None
        if not answered:
            return NO_RESPONSE
        return UPSTREAM_SENT_NONE if self.token_ids_requested else self.missing_reason_if_none

    def attributes(self, provider: str, answered: bool) -> dict[str, Any]:
        req = self.request
        attrs: dict[str, Any] = {"gen_ai.operation.name": self.operation, "gen_ai.provider.name": provider}
        if isinstance(req.get("model"), str):
            attrs["gen_ai.request.model"] = req["model"]
        for key, name in _SAMPLING_PARAMS.items():
            v = req.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                attrs[name] = v
        if isinstance(req.get("stop"), str):
            attrs["gen_ai.request.stop_sequences"] = [req["stop"]]
        elif isinstance(req.get("stop"), list):
            attrs["gen_ai.request.stop_sequences"] = [s for s in req["stop"] if isinstance(s, str)]
        attrs["gen_ai.input.messages"] = orjson.dumps(self.input_messages()).decode()
        if self.operation == "chat" and isinstance(req.get("tools"), list):
            attrs["gen_ai.tool.definitions"] = orjson.dumps(req["tools"]).decode()
        if self.response_id:
            attrs["gen_ai.response.id"] = self.response_id
        if self.response_model:
            attrs["gen_ai.response.model"] = self.response_model
        if self.choices:
            attrs["gen_ai.output.messages"] = orjson.dumps(self.output_messages()).decode()
            attrs["gen_ai.response.finish_reasons"] = [self.choices[k].finish_reason or "error"
                                                       for k in sorted(self.choices)]
        first = self.choices.get(0)
        usage = self.usage or {}
        input_tokens = usage.get("prompt_tokens", len(self.prompt_token_ids) if self.prompt_token_ids else None)
        output_tokens = usage.get("completion_tokens",
                                  len(first.token_ids) if first is not None and first.token_ids else None)
        if isinstance(input_tokens, int):
            attrs["gen_ai.usage.input_tokens"] = input_tokens
        if isinstance(output_tokens, int):
            attrs["gen_ai.usage.output_tokens"] = output_tokens
        if self.prompt_token_ids is not None:
            attrs["prompt_token_ids"] = self.prompt_token_ids
        if first is not None and first.token_ids is not None:
            attrs["response_token_ids"] = first.token_ids
        if first is not None and first.logprobs is not None:
            attrs["logprobs.content"] = orjson.dumps(
                [{"token": e.get("token"), "logprob": e.get("logprob")} for e in first.logprobs
                 if isinstance(e, dict)]).decode()
        reason = self.token_missing_reason(answered)
        if reason is not None:
            attrs[TOKEN_IDS_MISSING_REASON] = reason
        return attrs
