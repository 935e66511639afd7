"""A local OpenAI-compatible model server for the demo and the tests (no network, deterministic).

It answers arithmetic questions ("What is 12 + 30?") — right most of the time, wrong for some
questions (decided by a hash of the question, so rewards vary but repeat) — and echoes anything
else. Tokens are the UTF-8 bytes of the text; a chat prompt is tokenized as a chat template would
(`prompt_tokens`).

It serves what vLLM's OpenAI server serves, with vLLM's field names:
- `POST /v1/chat/completions`, `POST /v1/completions` (`stream: true` too: SSE chunks ending
  with `data: [DONE]`), `GET /v1/models`;
- token ids: `prompt_token_ids` on the chat response (on the first chunk when streamed) and on each
  completions choice, `token_ids` on each choice and on each stream chunk's choice;
- sampling logprobs when asked: chat `logprobs: true` → `choices[].logprobs.content[]` with
  `token`, `logprob`, `bytes`, `top_logprobs`; completions `logprobs: N` → `tokens`,
  `token_logprobs`, `top_logprobs`, `text_offset`;
- `stream_options.include_usage` → a last chunk with empty choices and the usage.

`token_ids="when_asked"` behaves like vLLM ≥ 0.10.2 (ids only with `return_token_ids: true`);
the default `"always"` keeps the older demo behaviour of always sending them. `flavor="sglang"`
answers chat calls like SGLang ≥ 0.5.13 instead: `return_prompt_token_ids` → `prompt_token_ids`
on each choice, `return_meta_info` → `meta_info.output_token_logprobs` (`[logprob, token_id,
text]`) and `meta_info.output_ids`; with `stream: true` those flags are refused (400). `latency`
is the time before an answer starts (a real server's queueing and prefill), `chunk_delay` spaces
stream chunks out (time to first token vs total time); `model_version_header` makes every response
carry that header.

    python examples/fake_openai.py --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import threading
import time
from typing import Any, Literal

import orjson
from aiohttp import web

QUESTION = re.compile(r"(-?\d+)\s*([+\-*])\s*(-?\d+)")
CHUNK_TOKENS = 4


def tokens(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def prompt_tokens(messages: list[dict[str, Any]]) -> list[int]:
    """The prompt ids of a chat, as a chat template makes them: each message `<|role|>content`,
    then the generation prompt `<|assistant|>`. A conversation that appends the model's answer and
    new messages therefore continues the previous prompt + response token for token."""
    return tokens("".join(f"<|{m.get('role')}|>{_text_of(m.get('content'))}" for m in messages) + "<|assistant|>")


def answer(question: str) -> str:
    m = QUESTION.search(question)
    if not m:
        return f"You said: {question}"
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    value = a + b if op == "+" else a - b if op == "-" else a * b
    if hashlib.sha256(question.encode()).digest()[0] < 77:  # ~30% of questions get a wrong answer
        value += 1
    return f"The answer is {value}."


def logprob_of(token: int, position: int) -> float:
    """A deterministic logprob in (-3, 0]: tests can recompute what the server sent."""
    return -((token * 31 + position * 7) % 300) / 100.0


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _chat_logprobs(ids: list[int], start: int) -> dict[str, Any]:
    content = []
    for k, t in enumerate(ids):
        lp = logprob_of(t, start + k)
        content.append({"token": bytes([t]).decode("latin-1"), "logprob": lp, "bytes": [t],
                        "top_logprobs": []})
    return {"content": content}


def _completion_logprobs(ids: list[int], start: int) -> dict[str, Any]:
    toks = [bytes([t]).decode("latin-1") for t in ids]
    lps = [logprob_of(t, start + k) for k, t in enumerate(ids)]
    return {"tokens": toks, "token_logprobs": lps, "top_logprobs": [{tok: lp} for tok, lp in zip(toks, lps)],
            "text_offset": list(range(start, start + len(ids)))}


class FakeOpenAI:
    """The server in a background thread: `with FakeOpenAI() as srv: srv.base_url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 token_ids: Literal["always", "when_asked"] = "always", chunk_delay: float = 0.0, latency: float = 0.0,
                 model_version_header: str | None = None, model_version: str = "fake-v1",
                 flavor: Literal["vllm", "sglang"] = "vllm") -> None:
        self.host, self.port = host, port
        self.flavor = flavor
        self.token_ids = token_ids
        self.chunk_delay, self.latency = chunk_delay, latency
        self.model_version_header, self.model_version = model_version_header, model_version
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []  # what each request asked for (tests read it)
        self.headers: list[dict[str, str]] = []
        self.cancelled = 0  # streams whose client went away before the end
        self.fail_next: list[int] = []  # HTTP statuses to answer the next requests with
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-openai", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _headers(self) -> dict[str, str]:
        return {self.model_version_header: self.model_version} if self.model_version_header else {}

    def _want_ids(self, body: dict[str, Any]) -> bool:
        return self.token_ids == "always" or body.get("return_token_ids") is True

    async def _read(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None, web.json_response({"error": {"message": "bad JSON", "type": "BadRequestError"}},
                                           status=400)
        self.requests += 1
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        if self.fail_next:
            status = self.fail_next.pop(0)
            return None, web.json_response({"error": {"message": f"injected {status}", "type": "ServerError",
                                                      "code": status}}, status=status)
        return body, None

    async def _think(self) -> None:
        """The time a model server takes before it answers (after the answer's id is taken)."""
        if self.latency:
            await asyncio.sleep(self.latency)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._read(request)
        if error is not None:
            return error
        assert body is not None
        messages = body.get("messages") or []
        last_user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        text = answer(_text_of(last_user))
        prompt_ids = prompt_tokens(messages)
        out_ids = tokens(text)
        rid, model = f"chatcmpl-fake-{self.requests}", f"{body.get('model', 'fake-model')}-served"
        usage = {"prompt_tokens": len(prompt_ids), "completion_tokens": len(out_ids),
                 "total_tokens": len(prompt_ids) + len(out_ids)}
        await self._think()
        if self.flavor == "sglang" and (not body.get("stream") or body.get("return_prompt_token_ids")
                                        or body.get("return_meta_info")):
            return self._sglang_chat(body, text, prompt_ids, out_ids, rid, model, usage)
        ids, lps = self.flavor == "vllm" and self._want_ids(body), body.get("logprobs") is True
        if not body.get("stream"):
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop", "logprobs": _chat_logprobs(out_ids, 0) if lps else None}
            out: dict[str, Any] = {"id": rid, "object": "chat.completion", "created": int(time.time()),
                                   "model": model, "choices": [choice], "usage": usage}
            if ids:
                choice["token_ids"] = out_ids
                out["prompt_token_ids"] = prompt_ids
            return web.Response(body=orjson.dumps(out), content_type="application/json", headers=self._headers())

        def chunk(k: int) -> dict[str, Any]:
            part = out_ids[k:k + CHUNK_TOKENS]
            last = k + CHUNK_TOKENS >= len(out_ids)
            delta: dict[str, Any] = {"content": bytes(part).decode("utf-8", "replace")}
            if k == 0:
                delta["role"] = "assistant"
            c: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": "stop" if last else None,
                                 "logprobs": _chat_logprobs(part, k) if lps else None}
            if ids:
                c["token_ids"] = part
            msg: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                                   "model": model, "choices": [c]}
            if ids and k == 0:
                msg["prompt_token_ids"] = prompt_ids
            return msg

        final = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                 "choices": [], "usage": usage}
        return await self._stream(request, body, [chunk(k) for k in range(0, len(out_ids), CHUNK_TOKENS)], final)

    def _sglang_chat(self, body: dict[str, Any], text: str, prompt_ids: list[int], out_ids: list[int], rid: str,
                     model: str, usage: dict[str, int]) -> web.Response:
        if body.get("stream"):
            return web.json_response({"object": "error", "message": "Please set stream=false when using "
                                      "return_prompt_token_ids=true.", "type": "BadRequestError", "code": 400},
                                     status=400)
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop", "logprobs": None}
        if body.get("logprobs") is True:
            choice["logprobs"] = _chat_logprobs(out_ids, 0)
        if body.get("return_prompt_token_ids"):
            choice["prompt_token_ids"] = prompt_ids
        if body.get("return_meta_info"):
            choice["meta_info"] = {"id": rid, "output_ids": out_ids, "output_token_logprobs": [
                [logprob_of(t, k), t, bytes([t]).decode("latin-1")] for k, t in enumerate(out_ids)]}
        out = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
               "choices": [choice], "usage": usage}
        return web.Response(body=orjson.dumps(out), content_type="application/json", headers=self._headers())

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._read(request)
        if error is not None:
            return error
        assert body is not None
        prompt = body.get("prompt")
        prompt = prompt[0] if isinstance(prompt, list) and prompt and isinstance(prompt[0], str) else prompt
        prompt_ids = list(prompt) if isinstance(prompt, list) else tokens(str(prompt or ""))
        text = answer(str(prompt))
        out_ids = tokens(text)
        rid, model = f"cmpl-fake-{self.requests}", f"{body.get('model', 'fake-model')}-served"
        usage = {"prompt_tokens": len(prompt_ids), "completion_tokens": len(out_ids),
                 "total_tokens": len(prompt_ids) + len(out_ids)}
        await self._think()
        ids, lps = self._want_ids(body), isinstance(body.get("logprobs"), int)

        def choice(part: list[int], k: int, last: bool, with_prompt: bool) -> dict[str, Any]:
            c: dict[str, Any] = {"index": 0, "text": bytes(part).decode("utf-8", "replace"),
                                 "logprobs": _completion_logprobs(part, k) if lps else None,
                                 "finish_reason": "length" if last and body.get("max_tokens") == len(out_ids) else
                                 ("stop" if last else None)}
            if ids:
                c["token_ids"] = part
                if with_prompt:
                    c["prompt_token_ids"] = prompt_ids
            return c

        if not body.get("stream"):
            out = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
                   "choices": [choice(out_ids, 0, True, True)], "usage": usage}
            return web.Response(body=orjson.dumps(out), content_type="application/json", headers=self._headers())
        chunks = [{"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
                   "choices": [choice(out_ids[k:k + CHUNK_TOKENS], k, k + CHUNK_TOKENS >= len(out_ids), k == 0)]}
                  for k in range(0, len(out_ids), CHUNK_TOKENS)]
        final = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
                 "choices": [], "usage": usage}
        return await self._stream(request, body, chunks, final)

    async def _stream(self, request: web.Request, body: dict[str, Any], chunks: list[dict[str, Any]],
                      final: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           **self._headers()})
        await resp.prepare(request)
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks = [*chunks, final]
        try:
            for k, msg in enumerate(chunks):
                if k and self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                await resp.write(b"data: " + orjson.dumps(msg) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, ConnectionError):
            self.cancelled += 1
            return resp
        if self.chunk_delay:  # a server that ends its answer a moment after [DONE]
            await asyncio.sleep(self.chunk_delay)
        await resp.write_eof()
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "fake-model", "object": "model", "created": 0, "owned_by": "vllm", "max_model_len": 4096}]})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> FakeOpenAI:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token-ids", choices=("always", "when_asked"), default="always")
    p.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each answer starts")
    args = p.parse_args()
    with FakeOpenAI(port=args.port, token_ids=args.token_ids, chunk_delay=args.chunk_delay,
                    latency=args.latency) as srv:
        print(f"fake OpenAI server on {srv.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
