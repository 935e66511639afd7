"""Spans from real OpenAI instrumentation libraries (OpenInference, OpenLLMetry, OTel GenAI
openai-v2), calling a local fake OpenAI server, land as correct `llm_calls` rows and triplets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from examples.fake_openai import FakeOpenAI, prompt_tokens, tokens
from spanpipe.warehouse.warehouse import Warehouse
from spanpipe.adapters.triplets import TripletAdapter
from tests.collector import Collector, wait_for

ROOT = Path(__file__).parents[1]
KINDS = ("openinference", "openllmetry", "openai-v2")
SYSTEM, USER = "Answer exactly.", "What is 2 + 3?"
PROMPT_IDS = prompt_tokens([{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}])


def test_real_instrumentations_give_llm_calls(tmp_path: Path) -> None:
    with FakeOpenAI() as srv, Collector(tmp_path, processors={"rollout": {}, "reward": {},
                                                               "batch": {"timeout": "20ms"}}, logs=True) as c:
        reply_ids = {}
        for kind in KINDS:
            env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{c.grpc_endpoint}",
                   "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true", "TRACELOOP_TRACE_CONTENT": "true"}
            out = subprocess.run([sys.executable, "tests/instrumented_agent.py", kind, srv.base_url, f"ro-{kind}"],
                                 env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
            assert out.returncode == 0, out.stderr
            reply_ids[kind] = out.stdout.strip()
        wh = Warehouse.connect(c.query_url)
        assert set(wh.wait_for_rollouts([f"ro-{k}" for k in KINDS], timeout=30)) == {f"ro-{k}" for k in KINDS}
        rows = {r["rollout_id"][3:]: r for r in wh.sql("SELECT * FROM llm_calls").to_pylist()}
        assert set(rows) == set(KINDS)  # exactly one LLM call each, whatever the span was named
        answer = "The answer is 6."  # the fake server gets this question wrong on purpose
        for kind, row in rows.items():
            assert row["response_id"] == reply_ids[kind], kind
            assert (row["provider"], row["request_model"], row["response_model"]) == \
                ("openai", "fake-model", "fake-model-served"), kind
            assert (row["input_tokens"], row["output_tokens"]) == (len(PROMPT_IDS), 16), kind
        canonical_in = [{"role": "system", "parts": [{"type": "text", "content": SYSTEM}]},
                        {"role": "user", "parts": [{"type": "text", "content": USER}]}]
        for kind in KINDS:
            ins = json.loads(rows[kind]["input_messages"])
            assert [{"role": m["role"], "parts": [dict(sorted(p.items())) for p in m["parts"]]} for m in ins] == \
                [{"role": m["role"], "parts": [dict(sorted(p.items())) for p in m["parts"]]} for m in canonical_in]
            outs = json.loads(rows[kind]["output_messages"])
            assert outs[0]["role"] == "assistant" and outs[0]["parts"][0]["content"] == answer
        assert rows["openinference"]["convention"] == "openinference"
        assert rows["openllmetry"]["convention"] == "gen_ai"
        # openai-v2 sends message content as OTLP log events, joined back to its span by id.
        assert rows["openai-v2"]["convention"] == "gen_ai_events"
        logged = wh.sql("SELECT l.event_name FROM logs l JOIN llm_calls c USING (trace_id, span_id) "
                        "WHERE c.rollout_id = 'ro-openai-v2' ORDER BY l.time_unix_nano").column("event_name").to_pylist()
        assert logged == ["gen_ai.system.message", "gen_ai.user.message", "gen_ai.choice"]
        # Token ids come back from a vLLM-style server inside OpenInference's output.value.
        assert rows["openinference"]["response_token_ids"] == tokens(answer)
        assert rows["openinference"]["prompt_token_ids"] == PROMPT_IDS
        # Triplets need no span-name configuration: every convention's LLM span is found.
        triplets = wh.triplets([f"ro-{k}" for k in KINDS])
        assert [t.rollout_id for t in triplets] == [f"ro-{k}" for k in KINDS] and not triplets.reasons
        assert all(t.reward == 0.0 for t in triplets)
        assert triplets[2].prompt["raw_content"] == \
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
        assert triplets[2].response["raw_content"][0]["content"] == answer
        oi = triplets[0]
        assert oi.response["token_ids"] == tokens(answer)
        assert oi.prompt["raw_content"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
        assert c.stop() == 0


def test_logfire_streamed_call_is_one_llm_call(tmp_path: Path) -> None:
    """Logfire records a streamed completion as the call span plus a sibling `streaming response …`
    span with the same request_data holding the answer: one LLM call, one triplet, answer included."""
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

    from tests.triplet_cases import BASE_NS, otlp_request_for

    def request(question: str, stream: bool) -> str:
        return json.dumps({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": question}]})

    def span(sid: int, parent: int | None, name: str, start: int, end: int, attrs: dict) -> dict:
        return {"span_id": f"{sid:016x}", "parent_span_id": None if parent is None else f"{parent:016x}",
                "name": name, "start_time_unix_nano": BASE_NS + start, "end_time_unix_nano": BASE_NS + end,
                "attributes": attrs}

    streamed = {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "request_data": request("Capital?", True),
                "logfire.msg_template": "Chat Completion with {request_data[model]!r}"}
    spans = [
        span(1, None, "agent run", 0, 1000, {"agent.name": "solver"}),
        span(2, 1, "Chat Completion with 'gpt-4o'", 10, 20, streamed),
        span(3, 1, "streaming response from 'gpt-4o' took 0.52s", 20, 540, {
            "gen_ai.system": "openai", "request_data": streamed["request_data"], "duration": 0.52,
            "logfire.msg_template": "streaming response from {request_data[model]!r} took {duration:.2f}s",
            "response_data": json.dumps({"message": {"role": "assistant", "content": "Paris."}, "usage": None})}),
        span(4, 1, "Chat Completion with 'gpt-4o'", 600, 700, {
            "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "request_data": request("And Spain?", False),
            "response_data": json.dumps({"message": {"role": "assistant", "content": "Madrid."},
                                         "usage": {"prompt_tokens": 9, "completion_tokens": 2}})}),
        span(5, 1, "agentlightning.annotation", 800, 800,
             {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 1.0}),
    ]
    with Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}}) as c:
        with grpc.insecure_channel(c.grpc_endpoint) as ch:
            TraceServiceStub(ch).Export(otlp_request_for(spans, "ro-logfire", "ab" * 16), timeout=10)
        wh = Warehouse.connect(c.query_url)
        deadline = __import__("time").monotonic() + 20
        while wh.sql("SELECT count(*) AS n FROM spans").column("n")[0].as_py() < len(spans):
            assert __import__("time").monotonic() < deadline
            __import__("time").sleep(0.05)
        calls = wh.sql("SELECT span_id, input_messages, output_messages, convention, end_time_unix_nano AS end "
                       "FROM llm_calls ORDER BY start_time_unix_nano").to_pylist()
        assert [r["span_id"] for r in calls] == [f"{2:016x}", f"{4:016x}"]
        assert [r["end"] - BASE_NS for r in calls] == [540, 700]  # the streamed call ends with its stream
        assert all(r["convention"] == "logfire" for r in calls)
        assert json.loads(calls[0]["output_messages"])[0]["parts"][0]["content"] == "Paris."
        assert json.loads(calls[0]["input_messages"])[0]["parts"][0]["content"] == "Capital?"
        for bulk in (True, False):
            triplets = wh.triplets(["ro-logfire"], bulk=bulk)
            assert [t.response["raw_content"] for t in triplets] == \
                [[{"role": "assistant", "content": "Paris."}], [{"role": "assistant", "content": "Madrid."}]]
            assert [t.prompt["raw_content"] for t in triplets] == \
                [[{"role": "user", "content": "Capital?"}], [{"role": "user", "content": "And Spain?"}]]
            assert [t.reward for t in triplets] == [None, 1.0]
        records = wh.messages(["ro-logfire"])
        assert [r["messages"][-1]["content"] for r in records] == ["Paris.", "Madrid."]
        assert c.stop() == 0


def test_real_logfire_plain_and_streamed_calls(tmp_path: Path) -> None:
    """Captured from the current Logfire release (`tests/logfire_agent.py`): its streamed call is the
    call span plus a `streaming response …` log span, both with GenAI attributes and a
    `request_data` that holds only the model — one LLM call each, paired by position and time."""
    with FakeOpenAI() as srv, Collector(tmp_path, processors={"rollout": {"idle_timeout": "0s"}, "reward": {},
                                                               "batch": {"timeout": "20ms"}}) as c:
        out = subprocess.run([sys.executable, "tests/logfire_agent.py", c.http_url, srv.base_url, "ro-lf"],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr
        wh = Warehouse.connect(c.query_url)
        wait_for(lambda: wh.sql("SELECT count(*) AS n FROM spans WHERE rollout_id = 'ro-lf'").column("n")[0].as_py() == 4,
                 15, "Logfire's 4 spans")
        calls = wh.sql("SELECT * FROM llm_calls WHERE rollout_id = 'ro-lf' ORDER BY start_time_unix_nano").to_pylist()
        triplets = TripletAdapter(wh).triplets(["ro-lf"])
        one_by_one = TripletAdapter(wh, bulk=False).triplets(["ro-lf"])  # as the viewer reads a rollout
    assert [c_["response_id"] for c_ in calls] == ["chatcmpl-fake-1", "chatcmpl-fake-2"]
    assert [json.loads(c_["output_messages"])[0]["parts"][0]["content"] for c_ in calls] == \
        ["The answer is 6.", "The answer is 8."]
    assert [json.loads(c_["input_messages"])[0]["parts"][0]["content"] for c_ in calls] == \
        ["What is 2 + 3?", "What is 4 + 4?"]
    for got in (triplets, one_by_one):
        assert [t.response["raw_content"][0]["content"] for t in got] == ["The answer is 6.", "The answer is 8."]
