"""Hand-built rollouts for the triplet adapter, the same spans given to Agent Lightning 0.3's
TracerTraceToTriplet (`make compat`, fixture `tests/fixtures/triplets_agl.json`) and to ours, both
directly and through a real collector."""

from __future__ import annotations

import json
from typing import Any

BASE_NS = 1_700_000_000 * 10**9
TRACE = "5b8efff798038103d269b633813fc60c"


def sid(n: int) -> str:
    return f"{n:016x}"


def llm(i: int, *, rid: str | None = None, prompt: str = "q", answer: str = "a", tokens: bool = True,
        **extra: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.system": "openai", "gen_ai.request.model": "qwen", "gen_ai.request.temperature": 0.7,
        "gen_ai.response.model": "qwen-2", "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": f"{prompt}{i}",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": f"{answer}{i}",
        "gen_ai.completion.0.finish_reason": "stop", "gen_ai.usage.prompt_tokens": 3, "gen_ai.usage.completion_tokens": 2,
    }
    if rid is not None:
        attrs["gen_ai.response.id"] = rid
    if tokens:
        attrs["prompt_token_ids"] = [100 + i, 101 + i, 102 + i]
        attrs["response_token_ids"] = [200 + i, 201 + i]
    attrs.update(extra)
    return attrs


def reward(v: float) -> dict[str, Any]:
    return {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": v}


L, R, A = "openai.chat.completion", "agentlightning.annotation", "agent.run"

# (span id, parent id, name, start ms, end ms, attributes)
CASES: dict[str, dict[str, Any]] = {
    "flat_final_reward": {"spans": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, llm(1, rid="r1")),
        (3, 1, L, 30, 40, llm(2, rid="r2")),
        (4, 1, L, 50, 60, llm(3, rid="r3")),
        (5, 1, R, 90, 90, reward(1.0)),
    ]},
    "intermediate_rewards": {"spans": [
        (1, None, "agentlightning.rollout", 0, 100, {}),
        (2, 1, A, 1, 99, {"agent.name": "solver"}),
        (3, 2, L, 10, 20, llm(1, rid="r1")),
        (4, 2, R, 21, 21, reward(0.1)),
        (5, 2, L, 30, 40, llm(2, rid="r2")),
        (6, 2, R, 41, 41, reward(0.2)),
        (7, 2, L, 50, 60, llm(3, rid="r3")),
    ]},
    "backfill_first_occurrence": {"spans": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, llm(1, rid="r1")),
        (3, 1, L, 30, 40, llm(2, rid="r2")),
        (4, 1, R, 50, 50, reward(0.5)),
        (5, 1, R, 60, 60, reward(0.7)),
        (6, 1, R, 70, 70, reward(0.9)),
    ]},
    "reward_before_call_ends": {"spans": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 50, llm(1, rid="r1")),
        (3, 1, R, 20, 20, reward(0.3)),
        (4, 1, L, 60, 70, llm(2, rid="r2")),
    ]},
    "several_agents_nested": {"spans": [
        (1, None, "workflow", 0, 200, {}),
        (2, 1, "planner", 0, 90, {"agent.name": "planner"}),
        (3, 2, L, 10, 20, llm(1, rid="p1")),
        (4, 2, "tool.search", 25, 35, {"tool.name": "search"}),
        (5, 2, L, 40, 50, llm(2, rid="p2")),
        (6, 1, "coder", 100, 190, {"agentops.span.kind": "agent", "operation.name": "coder"}),
        (7, 6, L, 110, 120, llm(3, rid="c1")),
        (8, 6, "autogen", 121, 180, {"recipient_agent_type": "critic"}),
        (9, 8, L, 130, 140, llm(4, rid="k1")),
        (10, 1, R, 195, 195, reward(1.0)),
    ]},
    "agent_match_critic": {"options": {"agent_match": "critic"}, "spans": "several_agents_nested"},
    "agent_match_nothing": {"options": {"agent_match": "^nobody$"}, "spans": "several_agents_nested"},
    "duplicated_response_ids": {"spans": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, llm(1, rid="same")),
        (3, 2, L, 11, 19, llm(2, rid="same")),
        (4, 1, L, 30, 40, llm(3, rid="same")),
        (5, 1, L, 50, 60, llm(4)),
        (6, 5, L, 51, 59, llm(5)),
        (7, 1, R, 70, 70, reward(1.0)),
    ]},
    "llm_inside_reward_span": {"spans": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, llm(1, rid="r1")),
        (3, 1, "agentlightning.operation", 30, 60, {"agentlightning.operation.name": "agentlightning.reward"}),
        (4, 3, L, 35, 45, llm(2, rid="judge")),
        (5, 1, R, 61, 61, reward(0.8)),
    ]},
    "llm_inside_reward_span_included": {"options": {"exclude_llm_call_in_reward": False},
                                        "spans": "llm_inside_reward_span"},
    "missing_parent": {"spans": [
        (2, 99, L, 10, 20, llm(1, rid="r1")),
        (3, 99, L, 30, 40, llm(2, rid="r2")),
        (4, 99, R, 50, 50, reward(0.4)),
    ]},
    "several_roots": {"spans": [
        (1, None, A, 0, 50, {"agent.name": "a"}),
        (2, 1, L, 10, 20, llm(1, rid="r1")),
        (3, None, A, 60, 120, {"agent.name": "b"}),
        (4, 3, L, 70, 80, llm(2, rid="r2")),
        (5, None, R, 130, 130, reward(0.6)),
    ]},
    "root_and_missing_parent": {"spans": [
        (1, None, A, 0, 50, {"agent.name": "a"}),
        (2, 1, L, 10, 20, llm(1, rid="r1")),
        (4, 77, L, 70, 80, llm(2, rid="r2")),
        (5, 77, R, 90, 90, reward(0.25)),
    ]},
    "repair_floating_llm_calls": {"options": {"agent_match": "solver"}, "spans": [
        (1, None, "session", 0, 200, {}),
        (2, 1, "solver", 5, 100, {"agent.name": "solver"}),
        (3, 1, "helper", 105, 190, {"agent.name": "helper"}),
        (4, 1, L, 10, 20, llm(1, rid="s1")),
        (5, 1, L, 30, 40, llm(2, rid="s2")),
        (6, 1, L, 110, 120, llm(3, rid="h1")),
        (7, 1, R, 195, 195, reward(1.0)),
    ]},
    "repair_off": {"options": {"agent_match": "solver", "repair_hierarchy": False},
                   "spans": "repair_floating_llm_calls"},
    "repair_under_single_child_chain": {"spans": [
        (1, None, "run_one.session", 0, 300, {}),
        (2, 1, "outer", 0, 300, {}),
        (3, 2, "agent-x", 10, 100, {"agent.name": "x"}),
        (4, 2, L, 20, 30, llm(1, rid="x1")),
        (5, 2, "agent-y", 110, 200, {"agent.name": "y"}),
        (6, 5, "inner", 120, 190, {}),
        (7, 2, L, 130, 140, llm(2, rid="y1")),
        (8, 2, R, 250, 250, reward(0.5)),
    ]},
    "first_sibling": {"options": {"reward_match": "first_sibling"}, "spans": [
        (1, None, A, 0, 200, {"agent.name": "solver"}),
        (2, 1, "step", 0, 90, {}),
        (3, 2, L, 10, 20, llm(1, rid="r1")),
        (4, 2, R, 30, 30, reward(0.1)),
        (5, 1, "step", 100, 190, {}),
        (6, 5, L, 110, 120, llm(2, rid="r2")),
        (7, 1, R, 195, 195, reward(0.9)),
    ]},
    "first_occurrence_same_spans": {"spans": "first_sibling"},
    "agentops_and_legacy_rewards": {"spans": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, llm(1, rid="r1")),
        (3, 1, "reward_fn", 30, 31, {"agentops.task.output": json.dumps({"type": "reward", "value": 0.25})}),
        (4, 1, L, 40, 50, llm(2, rid="r2")),
        (5, 1, R, 60, 60, {"reward": 0.75}),
    ]},
    "multi_dimensional_reward": {"spans": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, llm(1, rid="r1")),
        (3, 1, R, 30, 30, {"agentlightning.reward.0.name": "task", "agentlightning.reward.0.value": 0.5,
                           "agentlightning.reward.1.name": "length", "agentlightning.reward.1.value": -1.0}),
    ]},
    "payload_details": {"spans": [
        (1, None, A, 0, 100, {"agent.name": "vision"}),
        (2, 1, L, 10, 20, llm(1, rid="r1", **{
            "gen_ai.prompt.0.content": json.dumps([{"type": "text", "text": "what is this"},
                                                   {"type": "image_url", "image_url": {"url": "http://img/1.png"}}]),
            "gen_ai.prompt.1.role": "system", "gen_ai.prompt.1.content": "be brief",
            "logprobs.content": json.dumps([{"token": "a", "logprob": -0.1}]),
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.completion.0.tool_calls.0.name": "lookup",
            "gen_ai.completion.0.tool_calls.0.arguments": "{\"q\": 1}"})),
        (3, 1, R, 30, 30, reward(1.0)),
    ]},
    "no_token_ids_skipped": {"options": {"skip_empty_token_spans": True}, "spans": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, L, 10, 20, llm(1, rid="r1", tokens=False)),
        (3, 1, L, 30, 40, llm(2, rid="r2")),
        (4, 1, R, 50, 50, reward(1.0)),
    ]},
    "no_llm_span": {"spans": [
        (1, None, A, 0, 100, {"agent.name": "solver"}),
        (2, 1, "tool.calc", 10, 20, {}),
        (3, 1, R, 50, 50, reward(1.0)),
    ]},
}


def spans_of(case_id: str) -> list[dict[str, Any]]:
    raw = CASES[case_id]["spans"]
    if isinstance(raw, str):
        raw = CASES[raw]["spans"]
    return [{"trace_id": TRACE, "span_id": sid(s), "parent_span_id": None if p is None else sid(p), "name": name,
             "start_time_unix_nano": BASE_NS + start * 10**6, "end_time_unix_nano": BASE_NS + end * 10**6,
             "attributes": attrs, "sequence_id": seq + 1}
            for seq, (s, p, name, start, end, attrs) in enumerate(raw)]


def options_of(case_id: str) -> dict[str, Any]:
    return dict(CASES[case_id].get("options", {}))


def agl_view(triplets: list[Any]) -> list[dict[str, Any]]:
    """The fields compared with Agent Lightning: prompt, response, reward, metadata."""
    out = []
    for t in triplets:
        d = t if isinstance(t, dict) else (t.model_dump() if hasattr(t, "model_dump") else t.to_dict())
        out.append({k: d[k] for k in ("prompt", "response", "reward", "metadata")})
    return json.loads(json.dumps(out))


def otlp_request(case_id: str, rollout_id: str, trace_id: str) -> Any:
    """The case's spans as one OTLP export request, tagged with `rollout_id` on the resource."""
    return otlp_request_for(spans_of(case_id), rollout_id, trace_id)


def otlp_request_for(spans: list[dict[str, Any]], rollout_id: str, trace_id: str) -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from spanpipe.otlp_encode import to_any_value

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for key, value in (("service.name", "case-agent"), ("agentlightning.rollout_id", rollout_id),
                       ("agentlightning.attempt_id", "at-1")):
        kv = rs.resource.attributes.add()
        kv.key = key
        to_any_value(value, kv.value)
    ss = rs.scope_spans.add()
    for s in spans:
        sp = ss.spans.add()
        sp.trace_id = bytes.fromhex(trace_id)
        sp.span_id = bytes.fromhex(s["span_id"])
        if s["parent_span_id"]:
            sp.parent_span_id = bytes.fromhex(s["parent_span_id"])
        sp.name = s["name"]
        sp.start_time_unix_nano = s["start_time_unix_nano"]
        sp.end_time_unix_nano = s["end_time_unix_nano"]
        for key, value in s["attributes"].items():
            kv = sp.attributes.add()
            kv.key = key
            to_any_value(value, kv.value)
    return req
