"""Hand-built rollouts for the messages adapter: the same spans given to Agent Lightning 0.3's
TraceToMessages (`make compat`, fixture `tests/fixtures/messages_agl.json`) and to ours through a
real collector. Agent Lightning reads OpenLLMetry's flattened `gen_ai.prompt.<i>.*` keys, so the
cases use them; the other conventions are covered by tests/test_messages.py."""

from __future__ import annotations

import json
from typing import Any

from tests.triplet_cases import A, L, R, llm, reward

SEARCH = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


def chat(i: int, prompt: list[tuple[str, str]], answer: str | None = "a", **extra: Any) -> dict[str, Any]:
    """An OpenLLMetry chat span: `prompt` as (role, content) pairs, one assistant completion."""
    attrs = {k: v for k, v in llm(i, rid=f"r{i}").items()
             if not k.startswith(("gen_ai.prompt.", "gen_ai.completion."))}
    for n, (role, content) in enumerate(prompt):
        attrs[f"gen_ai.prompt.{n}.role"] = role
        attrs[f"gen_ai.prompt.{n}.content"] = content
    if answer is not None:
        attrs["gen_ai.completion.0.role"] = "assistant"
        attrs["gen_ai.completion.0.content"] = answer
        attrs["gen_ai.completion.0.finish_reason"] = "stop"
    attrs.update(extra)
    return attrs


def tool(i: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"tool.name": name, "tool.parameters": json.dumps(args), "tool.call.id": f"call_{i}",
            "tool.call.type": "function"}


FUNCTIONS = {
    "gen_ai.request.functions.0.name": "search", "gen_ai.request.functions.0.description": "web search",
    "gen_ai.request.functions.0.parameters": json.dumps(SEARCH),
    "gen_ai.request.functions.1.name": "calc", "gen_ai.request.functions.1.parameters": json.dumps(
        {"type": "object", "properties": {"expr": {"type": "string"}}}),
}

# (span id, parent id, name, start ms, end ms, attributes)
CASES: dict[str, list[tuple[int, int | None, str, int, int, dict[str, Any]]]] = {
    "system_user_answer": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, chat(1, [("system", "Be brief."), ("user", "2+2?")], "4")),
        (3, 1, R, 90, 90, reward(1.0)),
    ],
    "several_calls_in_order": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, chat(1, [("user", "first")], "one")),
        (3, 1, L, 30, 40, chat(2, [("user", "first"), ("assistant", "one"), ("user", "second")], "two")),
        (4, 1, L, 50, 60, chat(3, [("user", "third")], "three")),
    ],
    "tool_calls_from_child_spans": [
        (1, None, A, 0, 100, {"agent.name": "researcher"}),
        (2, 1, L, 10, 40, chat(1, [("user", "Find x and y")], "", **FUNCTIONS)),
        (3, 2, "tool.search", 20, 25, tool(1, "search", {"q": "x"})),
        (4, 2, "tool.calc", 26, 30, tool(2, "calc", {"expr": "y"})),
        (5, 1, L, 50, 60, chat(2, [("user", "Find x and y"), ("tool", "x=1"), ("tool", "y=2")], "x=1, y=2",
                                **FUNCTIONS, **{"gen_ai.prompt.1.tool_call_id": "call_1",
                                                "gen_ai.prompt.2.tool_call_id": "call_2"})),
    ],
    "function_definitions": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, chat(1, [("system", "You may search."), ("user", "weather?")], "sunny", **FUNCTIONS)),
    ],
    "prompt_without_answer": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, chat(1, [("user", "hello")], None)),
    ],
    "empty_and_missing_content": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, chat(1, [("system", ""), ("user", "go")], "", **{"gen_ai.prompt.2.role": "user"})),
    ],
    "nested_agents": [
        (1, None, "agentlightning.rollout", 0, 100, {}),
        (2, 1, A, 1, 49, {"agent.name": "planner"}),
        (3, 2, L, 10, 20, chat(1, [("user", "plan")], "step 1")),
        (4, 1, A, 50, 99, {"agent.name": "worker"}),
        (5, 4, L, 60, 70, chat(2, [("user", "do step 1")], "done")),
        (6, 4, "tool.write", 71, 72, tool(3, "write", {"path": "a.txt"})),
    ],
}


def case_spans(case_id: str) -> list[dict[str, Any]]:
    from tests.triplet_cases import BASE_NS, TRACE, sid

    return [{"trace_id": TRACE, "span_id": sid(s), "parent_span_id": None if p is None else sid(p), "name": name,
             "start_time_unix_nano": BASE_NS + start * 10**6, "end_time_unix_nano": BASE_NS + end * 10**6,
             "attributes": attrs, "sequence_id": seq + 1}
            for seq, (s, p, name, start, end, attrs) in enumerate(CASES[case_id])]


def messages_view(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fields compared with Agent Lightning: `messages` and `tools`."""
    return json.loads(json.dumps([{"messages": r["messages"], "tools": r["tools"]} for r in records]))
