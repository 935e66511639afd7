"""An agent for the web viewer's tests: rollouts with known rewards, modes and failures, LLM calls
with messages (tool calls, hostile text), a reward no call can take, a rollout without LLM calls
and a span whose parent was never stored. Sent through the real OTel SDK by `spanpipe.emit`.

    python tests/ui_agent.py ro-ui-00 ro-ui-01 ... ro-ui-xss ro-ui-early ro-ui-nocall ro-ui-orphan
"""

from __future__ import annotations

import json
import sys

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from spanpipe import emit

XSS = ['<script>window.__xss = 1</script>', '<img src=x onerror="window.__xss = 2">',
       '[click me](javascript:window.__xss=3) <a href="javascript:window.__xss=4">link</a>']
llm = trace.get_tracer("ui-agent")


def reward_of(n: int) -> float:
    return n / 10


def call(rid: str, k: int, question: str, answer: str, tool_call: bool = False) -> None:
    inputs = [{"role": "system", "parts": [{"type": "text", "content": "You solve arithmetic."}]},
              {"role": "user", "parts": [{"type": "text", "content": question}]}]
    if tool_call:
        inputs.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": "call-1", "response": XSS[1]}]})
    parts = [{"type": "text", "content": answer}]
    if tool_call:
        parts.append({"type": "tool_call", "id": "call-2", "name": "calculator", "arguments": {"expression": XSS[0]}})
    with llm.start_as_current_span("chat qwen", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "qwen", "gen_ai.response.model": "qwen-7b",
            "gen_ai.response.id": f"{rid}-{k}", "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 4,
            "gen_ai.input.messages": json.dumps(inputs),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": parts}]),
            "prompt_token_ids": [1, 2, 3, k], "response_token_ids": [4, 5]}):
        pass


def plain(rid: str, n: int) -> None:
    for k in range(2):
        call(rid, k, f"task {n}: what is {n} + {k}?", f"{n + k}")
    emit.emit_reward(reward_of(n))
    if n == 3:
        raise RuntimeError("tool crashed")


def main(ids: list[str]) -> None:
    emit.configure(service_name="ui-agent")
    for rid in ids:
        n = int(rid.rsplit("-", 1)[-1]) if rid[-1].isdigit() else 0
        try:
            with emit.rollout(rollout_id=rid, mode="val" if n % 2 else "train"):
                if rid.endswith("xss"):
                    call(rid, 0, " ".join(XSS), XSS[2], tool_call=True)
                    emit.emit_reward(0.5)
                elif rid.endswith("early"):
                    emit.emit_reward(0.9)  # before any call ended: no call can take it
                    call(rid, 0, "late question", "late answer")
                elif rid.endswith("nocall"):
                    with llm.start_as_current_span("tool.search"):
                        pass
                    emit.emit_reward(0.2)
                elif rid.endswith("orphan"):
                    here = trace.get_current_span().get_span_context()
                    lost = NonRecordingSpan(SpanContext(here.trace_id, 0xDEADBEEF, is_remote=True,
                                                        trace_flags=TraceFlags(TraceFlags.SAMPLED)))
                    with llm.start_as_current_span("under a lost parent", context=trace.set_span_in_context(lost)):
                        call(rid, 0, "orphan question", "orphan answer")
                    emit.emit_reward(0.7)
                else:
                    plain(rid, n)
        except RuntimeError:
            pass
    emit.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
