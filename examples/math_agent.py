"""Demo agent: answers arithmetic questions with the openai client, instrumented by OpenInference,
one rollout per question, rewarded 1.0 when the answer is right.

    python examples/math_agent.py --base-url http://127.0.0.1:8765/v1 --rollout step0-0 --rollout step0-1

Spans go to the collector named by OTEL_EXPORTER_OTLP_ENDPOINT (default http://127.0.0.1:4317).
A wrong first answer gets one retry with feedback, so some rollouts have two LLM calls and an
intermediate reward.
"""

from __future__ import annotations

import argparse
import random
import re

import openai
from openinference.instrumentation.openai import OpenAIInstrumentor

from spanpipe import emit


def ask(client: openai.OpenAI, messages: list[dict[str, str]]) -> str:
    reply = client.chat.completions.create(model="fake-math", messages=messages, temperature=0.0)
    return reply.choices[0].message.content or ""


def solve(client: openai.OpenAI, rollout_id: str, rng: random.Random) -> float:
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    question = f"What is {a} + {b}?"
    with emit.rollout(rollout_id=rollout_id, input={"question": question, "expected": a + b}) as r:
        messages = [{"role": "system", "content": "Answer with the number."}, {"role": "user", "content": question}]
        with emit.operation(name="solve") as op:
            op.set_input(question=question)
            text = ask(client, messages)
            correct = re.search(rf"\b{a + b}\b", text) is not None
            if not correct:
                emit.emit_reward(0.0, attributes={"stage": "first_try"})
                messages += [{"role": "assistant", "content": text},
                             {"role": "user", "content": f"That is wrong. Check again: {a} + {b}?"}]
                text = ask(client, messages)
                correct = re.search(rf"\b{a + b}\b", text) is not None
            op.set_output(text)
        reward = 1.0 if correct else 0.0
        emit.emit_reward({"correct": reward, "turns": float(len(messages) // 2)}, primary_key="correct")
        r.set_output({"answer": text})
    return reward


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", required=True, help="OpenAI-compatible server, e.g. http://127.0.0.1:8765/v1")
    p.add_argument("--rollout", action="append", required=True, help="rollout id (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    emit.configure(service_name="math-agent")
    OpenAIInstrumentor().instrument()
    client = openai.OpenAI(base_url=args.base_url, api_key="not-needed")
    rng = random.Random(args.seed)
    for rollout_id in args.rollout:
        solve(client, rollout_id, rng)
    emit.shutdown()


if __name__ == "__main__":
    main()
