"""A local OpenAI-compatible chat server for the demo and the tests (no network, deterministic).

`POST /v1/chat/completions` answers arithmetic questions ("What is 12 + 30?") — right most of the
time, wrong for some questions (decided by a hash of the question, so rewards vary but repeat),
and echoes anything else. Like vLLM with `return_token_ids`, the response carries
`prompt_token_ids` and `choices[0].token_ids` (bytes of the text), which is where RL trainers get
token ids from.

    python examples/fake_openai.py --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import threading
import time
from typing import Any

from aiohttp import web

QUESTION = re.compile(r"(-?\d+)\s*([+\-*])\s*(-?\d+)")


def tokens(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def answer(question: str) -> str:
    m = QUESTION.search(question)
    if not m:
        return f"You said: {question}"
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    value = a + b if op == "+" else a - b if op == "-" else a * b
    if hashlib.sha256(question.encode()).digest()[0] < 77:  # ~30% of questions get a wrong answer
        value += 1
    return f"The answer is {value}."


def completion(body: dict[str, Any], n: int) -> dict[str, Any]:
    messages = body.get("messages") or []
    last_user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "") or ""
    if isinstance(last_user, list):
        last_user = " ".join(p.get("text", "") for p in last_user if isinstance(p, dict))
    text = answer(str(last_user))
    prompt_text = "\n".join(str(m.get("content")) for m in messages)
    prompt_ids, out_ids = tokens(prompt_text), tokens(text)
    return {
        "id": f"chatcmpl-fake-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": f"{body.get('model', 'fake-model')}-served",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                     "logprobs": None, "token_ids": out_ids}],
        "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": len(out_ids),
                  "total_tokens": len(prompt_ids) + len(out_ids)},
        "prompt_token_ids": prompt_ids,
    }


class FakeOpenAI:
    """The server in a background thread: `with FakeOpenAI() as srv: srv.base_url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-openai", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        if body.get("stream"):
            return web.json_response({"error": {"message": "streaming is not supported here"}}, status=400)
        return web.json_response(completion(body, self.requests))

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
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
    args = p.parse_args()
    with FakeOpenAI(port=args.port) as srv:
        print(f"fake OpenAI server on {srv.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
