"""Each instrumentation convention states its rules in one module (`spanpipe.semconv.conventions`),
and every reader goes through them: the reward processor (what the warehouse and the SQL adapters
see), `spanpipe.emit`'s reading helpers, the in-memory adapters (`spans_to_columns`) and the SQL
views agree on every case below."""

from __future__ import annotations

import pkgutil

import orjson
import pytest

from componentkit import Sink, create, registry, spans
from spanpipe.adapters.span_columns import spans_to_columns
from spanpipe.adapters.triplets import TripletAdapter
from spanpipe.emit import get_reward_value, get_rewards_from_span
from spanpipe.semconv import conventions
from spanpipe.semconv.llm_call import llm_call
from spanpipe.warehouse.schema import TOKENS_IN_SQL

ANNOTATION = "agentlightning.annotation"
EVAL = [{"name": "gen_ai.evaluation.result", "attributes": {"gen_ai.evaluation.name": "judge",
                                                           "gen_ai.evaluation.score.value": 0.4}}]
CHAT = {"gen_ai.operation.name": "chat"}

# case: (convention, span name, attributes, events, primary reward | "malformed" | None)
REWARD_CASES = {
    "two dimensions": ("agentlightning", ANNOTATION, {"agentlightning.reward.0.name": "acc", "agentlightning.reward.0.value": 1.0,
                                                      "agentlightning.reward.1.name": "len", "agentlightning.reward.1.value": 0.2}, None, 1.0),
    "any span": ("agentlightning", "my.step", {"agentlightning.reward.0.name": "acc", "agentlightning.reward.0.value": 0.5}, None, 0.5),
    "numeric text": ("agentlightning", ANNOTATION, {"agentlightning.reward.0.name": "acc", "agentlightning.reward.0.value": "0.25"}, None, 0.25),
    "int value": ("agentlightning", ANNOTATION, {"agentlightning.reward.0.name": "acc", "agentlightning.reward.0.value": 3}, None, 3.0),
    "legacy": ("agentlightning", ANNOTATION, {"reward": 0.75}, None, 0.75),
    "legacy reward span": ("agentlightning", "agentlightning.reward", {"reward": 0.5}, None, 0.5),
    "legacy elsewhere": ("agentlightning", "my.step", {"reward": 0.75}, None, None),
    "no reward": (None, "my.step", {"x": 1}, None, None),
    "bare key": ("agentlightning", ANNOTATION, {"agentlightning.reward": 1.0}, None, None),
    "no name": ("agentlightning", ANNOTATION, {"agentlightning.reward.0.value": 1.0}, None, "malformed"),
    "not a number": ("agentlightning", ANNOTATION, {"agentlightning.reward.0.name": "acc",
                                                    "agentlightning.reward.0.value": "high"}, None, "malformed"),
    "not finite": ("agentlightning", ANNOTATION, {"agentlightning.reward.0.name": "acc",
                                                  "agentlightning.reward.0.value": "nan"}, None, "malformed"),
    "not a list": ("agentlightning", ANNOTATION, {"agentlightning.reward.acc": 1.0}, None, "malformed"),
    "agentops task output": ("agentops", "task", {"agentops.task.output": '{"type": "reward", "value": 2.0}'}, None, 2.0),
    "agentops ordinary output": ("agentops", "task", {"agentops.task.output": 'the "reward" was fine'}, None, None),
    "agentops not a number": ("agentops", "task", {"agentops.entity.output": '{"type": "reward", "value": "x"}'}, None,
                              "malformed"),
    "openinference annotation": ("openinference", "judge", {"annotations.0.annotation.name": "correct",
                                                            "annotations.0.annotation.score": 0.9}, None, 0.9),
    "openinference not from 0": ("openinference", "judge", {"annotations.1.annotation.name": "correct",
                                                            "annotations.1.annotation.score": 0.9}, None, "malformed"),
    "openinference without a score": ("openinference", "judge", {"annotations.0.annotation.name": "correct"}, None,
                                      "malformed"),
    "evaluation event": ("gen_ai", "judge", {}, EVAL, 0.4),
    "evaluation event without a score": ("gen_ai", "judge", {}, [{"name": "gen_ai.evaluation.result", "attributes": {}}],
                                         "malformed"),
    "agent lightning first": ("agentlightning", "judge", {"agentlightning.reward.0.name": "a",
                                                          "agentlightning.reward.0.value": 1.0}, EVAL, 1.0),
}

# case: (convention, span name, attributes, span type)
KIND_CASES = {
    "agent lightning span": ("agentlightning", "agentlightning.message", {}, "message"),
    "langsmith llm": ("langsmith", "x", {"langsmith.span.kind": "LLM"}, "llm"),
    "langsmith chain": ("langsmith", "x", {"langsmith.span.kind": "chain"}, "agent"),
    "langsmith retriever": ("langsmith", "x", {"langsmith.span.kind": "retriever"}, "other"),
    "logfire stream sibling": ("logfire", "streaming response from 'gpt-4o'", {"request_data": "{}"}, "other"),
    "logfire call": ("logfire", "Chat Completion with 'gpt-4o'", {"request_data": "{}", "gen_ai.system": "openai"}, "llm"),
    "genai chat": ("gen_ai", "chat gpt-4o", CHAT, "llm"),
    "genai tool": ("gen_ai", "execute_tool search", {"gen_ai.operation.name": "execute_tool"}, "tool"),
    "genai agent": ("gen_ai", "invoke_agent a", {"gen_ai.operation.name": "invoke_agent"}, "agent"),
    "genai tool by name": ("gen_ai", "tool.search", {}, "tool"),
    "genai agent by name": ("gen_ai", "invoke_agent planner", {}, "agent"),
    "agentops agent": ("agentops", "x", {"agentops.span.kind": "agent"}, "agent"),
    "openllmetry task": ("openllmetry", "x", {"traceloop.span.kind": "task"}, "agent"),
    "openllmetry request type": ("openllmetry", "openai.chat", {"llm.request.type": "chat"}, "llm"),
    "openinference llm": ("openinference", "ChatCompletion", {"openinference.span.kind": "LLM"}, "llm"),
    "openinference chain": ("openinference", "x", {"openinference.span.kind": "CHAIN"}, "agent"),
    "openinference tool over a chat operation": ("openinference", "x", {"openinference.span.kind": "TOOL", **CHAT}, "tool"),
    "genai tool over an openinference kind": ("gen_ai", "x", {"gen_ai.operation.name": "execute_tool",
                                                              "openinference.span.kind": "LLM"}, "tool"),
    "openai agents agent": ("frameworks", "x", {"agent.name": "planner"}, "agent"),
    "default llm name": (None, "openai.chat.completion", {}, "llm"),
    "nothing known": (None, "x", {"a": 1}, "other"),
    "an evaluated llm call stays llm": ("gen_ai", "chat gpt-4o", CHAT, "llm"),
}


def through_the_processor(name: str, attrs: dict, events: list | None) -> tuple[float | None, str | None]:
    factory = registry().get("processors", "reward")
    proc = create(factory, factory.config_class.model_validate({}), Sink())
    batch, _ = spans(1)
    batch.name[0], batch.attributes[0], batch.events[0] = name, attrs, events
    out: list = []
    proc.next = type("Keep", (), {"consume": lambda self, b: out.append(b)})()
    proc.consume(batch)
    return out[0].extra["reward"][0], out[0].extra["span_type"][0]


def through_emit_reading(name: str, attrs: dict, events: list | None) -> float | str | None:
    span = {"name": name, "attributes": attrs, "events": events}
    try:
        get_rewards_from_span(span)
        return get_reward_value(span)
    except ValueError:
        return "malformed"


def through_the_adapters(name: str, attrs: dict, events: list | None) -> tuple[float | None, str | None]:
    cols = spans_to_columns([{"span_id": "s1", "name": name, "attributes": attrs, "events": events}], TripletAdapter())
    return cols.reward[0], cols.span_type[0]


@pytest.mark.parametrize("case", list(REWARD_CASES))
def test_one_reward_rule(case):
    _, name, attrs, events, expected = REWARD_CASES[case]
    assert through_emit_reading(name, attrs, events) == expected
    # The collector never fails a batch for a malformed reward: the span is kept without one.
    stored = None if expected == "malformed" else expected
    assert through_the_processor(name, attrs, events)[0] == stored
    assert through_the_adapters(name, attrs, events)[0] == stored


@pytest.mark.parametrize("case", list(KIND_CASES))
def test_one_span_kind_rule(case):
    _, name, attrs, expected = KIND_CASES[case]
    events = EVAL if case == "an evaluated llm call stays llm" else None
    assert through_the_processor(name, attrs, events)[1] == expected
    assert through_the_adapters(name, attrs, events)[1] == expected


def test_every_convention_module_is_listed_and_has_cases():
    modules = {m.name for m in pkgutil.iter_modules(conventions.__path__)}
    assert {c.name for c in conventions.ALL} == {getattr(conventions, m).CONVENTION.name for m in modules}
    covered = {case[0] for case in (*REWARD_CASES.values(), *KIND_CASES.values())} | {"litellm"}
    assert {c.name for c in conventions.ALL} <= covered


def test_usage_and_token_ids_come_from_the_convention_tables():
    litellm = llm_call({"llm.hosted_vllm.prompt_token_ids": "[1, 2]",
                        "llm.hosted_vllm.response_token_ids": [[3]], "llm.token_count.prompt": 2})
    assert (litellm["prompt_token_ids"], litellm["response_token_ids"], litellm["input_tokens"]) == ([1, 2], [3], 2)
    agl_first = llm_call({"prompt_token_ids": [7], "llm.hosted_vllm.prompt_token_ids": [1], "response_token_ids": [8],
                          "output.value": orjson.dumps({"id": "r-1", "choices": [{"token_ids": [9]}]}).decode()})
    assert (agl_first["prompt_token_ids"], agl_first["response_token_ids"], agl_first["response_id"]) == ([7], [8], "r-1")
    for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"):
        assert f"'{key}'" in TOKENS_IN_SQL
