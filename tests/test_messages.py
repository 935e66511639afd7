"""MessagesAdapter: OpenAI fine-tuning records from LLM calls of two conventions, tool calls from
child tool spans, tool definitions from the request — through a real collector."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from spanpipe.warehouse.warehouse import Warehouse
from tests.collector import Collector
from tests.messages_cases import CASES as MESSAGE_CASES, case_spans, messages_view
from tests.triplet_cases import BASE_NS, otlp_request_for, reward, sid

SEARCH = {"type": "object", "properties": {"q": {"type": "string"}}}
RAW = [
    (1, None, "agent.run", 0, 100, {"agent.name": "researcher"}),
    (2, 1, "openai.chat.completion", 10, 20, {
        "gen_ai.response.id": "r1", "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "Use tools.",
        "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "Find x",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "",
        "gen_ai.request.functions.0.name": "search", "gen_ai.request.functions.0.description": "web search",
        "gen_ai.request.functions.0.parameters": json.dumps(SEARCH)}),
    (3, 2, "tool.search", 15, 18, {"tool.name": "search", "tool.parameters": '{"q": "x"}', "tool.call.id": "call_1"}),
    (4, 1, "ChatCompletion", 30, 40, {
        "openinference.span.kind": "LLM",
        "output.value": json.dumps({"id": "r2", "choices": [{"message": {"role": "assistant", "content": "x is 42"}}]}),
        "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "Find x",
        "llm.input_messages.1.message.role": "assistant",
        "llm.input_messages.1.message.tool_calls.0.tool_call.id": "call_1",
        "llm.input_messages.1.message.tool_calls.0.tool_call.function.name": "search",
        "llm.input_messages.1.message.tool_calls.0.tool_call.function.arguments": '{"q": "x"}',
        "llm.input_messages.2.message.role": "tool", "llm.input_messages.2.message.tool_call_id": "call_1",
        "llm.input_messages.2.message.content": "42",
        "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "x is 42",
        "llm.tools.0.tool.json_schema": json.dumps({"type": "function", "function": {"name": "search",
                                                                                     "parameters": SEARCH}})}),
    (5, 1, "agentlightning.annotation", 50, 50, reward(1.0)),
]


def spans() -> list[dict]:
    return [{"span_id": sid(s), "parent_span_id": None if p is None else sid(p), "name": n,
             "start_time_unix_nano": BASE_NS + a * 10**6, "end_time_unix_nano": BASE_NS + b * 10**6, "attributes": at}
            for s, p, n, a, b, at in RAW]


def test_messages_records_through_a_collector(tmp_path: Path) -> None:
    with Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}}) as c:
        with grpc.insecure_channel(c.grpc_endpoint) as ch:
            TraceServiceStub(ch).Export(otlp_request_for(spans(), "ro-msg", "ab" * 16), timeout=10)
        assert c.stop() == 0
    with Warehouse.open(c.db) as wh:
        records = wh.messages(["ro-msg", "ro-none"])
    assert records.reasons == {"ro-none": "no spans stored for this rollout"}
    first, second = records
    assert first["messages"] == [
        {"role": "system", "content": "Use tools."}, {"role": "user", "content": "Find x"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}]}]
    assert first["tools"] == [{"type": "function", "function": {"name": "search", "description": "web search",
                                                                "parameters": SEARCH}}]
    assert (first["reward"], second["reward"]) == (None, 1.0)
    assert second["messages"] == [
        {"role": "user", "content": "Find x"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "x is 42"}]
    assert second["tools"] == [{"type": "function", "function": {"name": "search", "parameters": SEARCH}}]
    assert [r["span_id"] for r in records] == [sid(2), sid(4)]


def test_messages_equal_agentlightning_fixture(tmp_path: Path) -> None:
    """Each hand-built rollout through a real collector gives, field by field, the `messages` and `tools`
    Agent Lightning 0.3's TraceToMessages gives on the same spans (fixture checked by `make compat`)."""
    expected = json.loads((Path(__file__).parent / "fixtures" / "messages_agl.json").read_text())
    assert set(expected) == set(MESSAGE_CASES)
    with Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}}) as c:
        with grpc.insecure_channel(c.grpc_endpoint) as ch:
            for n, case_id in enumerate(MESSAGE_CASES):
                TraceServiceStub(ch).Export(otlp_request_for(case_spans(case_id), f"ro-{case_id}", f"{n + 1:032x}"),
                                            timeout=10)
        assert c.stop() == 0
    with Warehouse.open(c.db) as wh:
        for case_id in MESSAGE_CASES:
            assert messages_view(wh.messages([f"ro-{case_id}"])) == expected[case_id], case_id
