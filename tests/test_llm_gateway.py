"""The llm_gateway receiver, end to end: real collector processes, the real `openai` client (sync,
async, streamed, /v1/completions), a Node fetch client, an OpenInference-instrumented agent, and a
fake upstream that behaves like vLLM's OpenAI server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest
import requests

from collector import wait_for
from gateway_collector import Gateway
from examples.fake_openai import FakeOpenAI, answer, logprob_of, prompt_tokens, tokens
from spanpipe.warehouse.warehouse import Warehouse


@pytest.fixture(autouse=True, params=["auto", 0], ids=["workers=auto", "workers=0"])
def gateway_workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test with proxy worker processes (the default) and with calls served in the collector
    process (`workers: 0`); a test that sets `workers` itself keeps its setting."""
    original = Gateway.__init__

    def init(self, tmp, upstream, processors=None, env=None, **gateway):  # type: ignore[no-untyped-def]
        gateway.setdefault("workers", request.param)
        original(self, tmp, upstream, processors, env, **gateway)

    monkeypatch.setattr(Gateway, "__init__", init)


ROOT = Path(__file__).parents[1]
Q = "What is 2 + 3?"


@pytest.fixture
def vllm():
    with FakeOpenAI(token_ids="when_asked") as srv:
        yield srv


def chat(text: str = Q) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_sync_async_streamed_and_completions_calls_land_with_token_ids_and_logprobs(tmp_path, vllm):
    with Gateway(tmp_path, vllm) as g:
        client = g.client("/rollout/ro-1/attempt/at-1")
        plain = client.chat.completions.create(model="qwen", messages=chat())
        streamed = "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(model="qwen", messages=chat("What is 4 + 4?"), stream=True)
                           if c.choices)

        async def async_call() -> str:
            async with openai.AsyncOpenAI(base_url=f"{g.url}/v1", api_key="k", max_retries=0,
                                          default_headers={"x-rollout-id": "ro-2", "x-attempt-id": "at-2"}) as ac:
                r = await ac.chat.completions.create(model="qwen", messages=chat("What is 7 * 6?"))
                return r.choices[0].message.content or ""
        from_async = asyncio.run(async_call())
        completion = client.completions.create(model="qwen", prompt="What is 9 - 4?", max_tokens=32)
        streamed_completion = "".join(c.choices[0].text for c in client.completions.create(
            model="qwen", prompt="What is 1 + 1?", stream=True) if c.choices)
        # The client gets valid OpenAI answers; the upstream was asked for token ids and logprobs.
        assert plain.choices[0].message.content == answer(Q)
        assert streamed == answer("What is 4 + 4?") and from_async == answer("What is 7 * 6?")
        assert completion.choices[0].text == answer("What is 9 - 4?")
        assert streamed_completion == answer("What is 1 + 1?")
        assert [b.get("return_token_ids") for b in vllm.bodies] == [True] * 5
        assert [b.get("logprobs") for b in vllm.bodies] == [True, True, True, 0, 0]
        spans = {s["attributes"]["gen_ai.response.id"]: s for s in g.gateway_spans(5)}
    assert len(spans) == 5
    cases = {"chatcmpl-fake-1": (Q, "chat", False), "chatcmpl-fake-2": ("What is 4 + 4?", "chat", True),
             "chatcmpl-fake-3": ("What is 7 * 6?", "chat", False), "cmpl-fake-4": ("What is 9 - 4?", "text_completion", False),
             "cmpl-fake-5": ("What is 1 + 1?", "text_completion", True)}
    for rid, (question, operation, stream) in cases.items():
        a = spans[rid]["attributes"]
        text = answer(question)
        assert spans[rid]["name"] == f"{operation} qwen" and spans[rid]["status_code"] == "UNSET", rid
        assert a["gen_ai.operation.name"] == operation and a["gen_ai.request.model"] == "qwen"
        assert a["gen_ai.response.model"] == "qwen-served" and a["spanpipe.gateway.stream"] is stream
        prompt_ids = prompt_tokens(chat(question)) if operation == "chat" else tokens(question)
        assert a["prompt_token_ids"] == prompt_ids and a["response_token_ids"] == tokens(text), rid
        assert [e["logprob"] for e in json.loads(a["logprobs.content"])] == \
            [logprob_of(t, k) for k, t in enumerate(tokens(text))], rid
        assert a["gen_ai.response.finish_reasons"] == ["stop"]
        assert json.loads(a["gen_ai.output.messages"])[0]["parts"][0]["content"] == text
        assert json.loads(a["gen_ai.input.messages"]) == [{"role": "user", "parts": [{"type": "text", "content": question}]}]
        assert a["gen_ai.usage.input_tokens"] == len(prompt_ids)
        assert "spanpipe.token_ids.missing_reason" not in a
    assert {(s["rollout_id"], s["attempt_id"]) for s in spans.values()} == {("ro-1", "at-1"), ("ro-2", "at-2")}
    # Neither the client's key nor the upstream's ever lands in a span.
    assert not any("client-key" in json.dumps(s) for s in spans.values())


def test_secrets_stay_out_of_spans_and_the_upstream_gets_its_own_key(tmp_path, vllm):
    env = {"UPSTREAM_KEY": "sk-upstream-secret"}
    with Gateway(tmp_path, vllm, env=env, upstreams=[{"base_url": vllm.base_url, "api_key": "${env:UPSTREAM_KEY}"}]) as g:
        g.client().chat.completions.create(model="m", messages=chat())
        spans = g.gateway_spans(1)
        stored = Warehouse.connect(g.query_url).sql("SELECT * FROM spans").to_pylist()
    assert vllm.headers[-1]["Authorization"] == "Bearer sk-upstream-secret"
    assert "sk-upstream-secret" not in json.dumps(stored, default=str) and "client-key" not in json.dumps(stored, default=str)
    assert spans[0]["attributes"]["prompt_token_ids"]


def test_streamed_chunks_reach_the_client_before_the_upstream_has_finished(tmp_path):
    with FakeOpenAI(token_ids="when_asked", chunk_delay=0.25) as slow, Gateway(tmp_path, slow) as g:
        started = time.monotonic()
        arrivals = []
        for c in g.client().chat.completions.create(model="m", messages=chat(), stream=True):
            arrivals.append(time.monotonic() - started)
        span = g.gateway_spans(1)[0]
    chunks = len(tokens(answer(Q))) // 4
    streamed = 0.25 * (chunks - 1)
    assert chunks >= 4 and arrivals[-1] >= streamed  # the upstream spaced its chunks out...
    # ...and the first one was forwarded when it came, not with the whole answer: it reached the
    # client at least two chunk intervals before the last (measured between arrivals, so the test
    # holds on a loaded machine, where the call itself may start late)
    assert arrivals[-1] - arrivals[0] >= streamed - 0.5
    assert span["attributes"]["spanpipe.gateway.time_to_first_chunk_ms"] < 1000 * (streamed - 0.5)
    assert span["attributes"]["response_token_ids"] == tokens(answer(Q))


def test_gateway_errors_have_openai_shape_and_every_call_has_its_span(tmp_path, vllm):
    with Gateway(tmp_path, vllm) as g:
        before = vllm.requests
        bad = requests.post(f"{g.url}/v1/chat/completions", data=b"{not json", timeout=10,
                            headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        assert vllm.requests == before  # bad input never reaches the upstream
        missing = requests.get(f"{g.url}/v1/embeddings", timeout=10)
        assert missing.status_code == 404 and "Unknown request URL" in missing.json()["error"]["message"]
        vllm.fail_next = [400]
        with pytest.raises(openai.BadRequestError) as passed:
            g.client().chat.completions.create(model="m", messages=chat())
        assert "injected 400" in str(passed.value)  # the upstream's own answer, unchanged
        models = g.client().models.list()
        assert [m.id for m in models.data] == ["fake-model"]
        vllm.stop()
        with pytest.raises(openai.APIStatusError) as down:
            g.client().chat.completions.create(model="m", messages=chat())
        assert down.value.status_code == 502 and down.value.body["code"] == "upstream_unreachable"
        spans = g.gateway_spans(2)
    assert [(s["status_code"], s["attributes"]["error.type"]) for s in spans] == [("ERROR", "400"), ("ERROR", "unreachable")]
    assert spans[1]["attributes"]["spanpipe.token_ids.missing_reason"].startswith("no_response")
    assert "unreachable" in spans[1]["status_message"]


def test_a_client_that_leaves_mid_stream_cancels_the_upstream_and_its_span_says_so(tmp_path):
    with FakeOpenAI(token_ids="when_asked", chunk_delay=0.3) as slow, Gateway(tmp_path, slow) as g:
        with socket.create_connection(("127.0.0.1", g.gateway_port)) as sock:
            body = json.dumps({"model": "m", "messages": chat(), "stream": True}).encode()
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            got = b""
            while b"data: " not in got:
                got += sock.recv(65536)
        span = g.gateway_spans(1)[0]
        wait_for(lambda: slow.cancelled == 1, 10, "the upstream stream to be cancelled")
    assert span["status_code"] == "ERROR" and "disconnected" in span["status_message"]
    assert span["attributes"]["error.type"] == "client_disconnected"
    assert 0 < len(span["attributes"]["response_token_ids"]) < len(tokens(answer(Q)))  # what arrived


def test_a_client_that_leaves_after_the_last_chunk_got_the_whole_call(tmp_path):
    """Read up to [DONE], then reset the connection while the upstream has not yet ended its
    answer: nothing was cut, so the span says the call went well."""
    with FakeOpenAI(token_ids="when_asked", chunk_delay=0.2) as slow, Gateway(tmp_path, slow) as g:
        body = json.dumps({"model": "m", "stream": True, "messages": chat()}).encode()
        with socket.create_connection(("127.0.0.1", g.gateway_port)) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            got = b""
            while b"data: [DONE]" not in got:
                got += s.recv(65536)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset, not a FIN
        span = g.gateway_spans(1)[0]
    assert span["status_code"] == "UNSET" and "error.type" not in span["attributes"], span
    assert span["attributes"]["response_token_ids"] == tokens(answer(Q))


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_lets_streams_in_flight_finish_and_their_spans_land(tmp_path, workers):
    """In the collector process, and (workers: 2) in every proxy worker."""
    n = 6
    with FakeOpenAI(token_ids="when_asked", chunk_delay=0.15) as slow, Gateway(tmp_path, slow, workers=workers) as g:
        texts: list[str] = []

        def stream() -> None:
            texts.append("".join(c.choices[0].delta.content or "" for c in
                                 g.client().chat.completions.create(model="m", messages=chat(), stream=True)
                                 if c.choices))
        threads = [threading.Thread(target=stream) for _ in range(n)]
        for t in threads:
            t.start()
        wait_for(lambda: slow.requests == n, 10, f"{n} streams to start", poll=0.02)
        g.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert g.proc.wait(60) == 0
    assert texts == [answer(Q)] * n
    with Warehouse.open(g.db) as wh:
        rows = wh.sql("SELECT attributes->>'gen_ai.response.id' AS rid, len(CAST(attributes->'response_token_ids' "
                      "AS INTEGER[])) AS n FROM spans WHERE scope_name = 'spanpipe.llm_gateway'").to_pylist()
    assert sorted(r["rid"] for r in rows) == sorted(f"chatcmpl-fake-{k}" for k in range(1, n + 1))
    assert all(r["n"] == len(tokens(answer(Q))) for r in rows)


def test_model_version_from_config_header_or_trainer_and_pause_holds_calls(tmp_path):
    with FakeOpenAI(token_ids="when_asked", chunk_delay=0.2, model_version_header="x-model-version",
                    model_version="step-7") as up, Gateway(tmp_path, up, upstreams=[
                        {"model": "pinned", "base_url": up.base_url, "model_version": "v-config"},
                        {"model": "*", "base_url": up.base_url}], model_version_header="") as g:
        client = g.client()
        client.chat.completions.create(model="pinned", messages=chat())
        client.chat.completions.create(model="other", messages=chat())
        assert requests.post(f"{g.url}/v1/gateway/model_version", json={"model_version": "step-8"}, timeout=5).json() == \
            {"model_version": "step-8"}
        client.chat.completions.create(model="other", messages=chat())
        versions = [s["attributes"]["spanpipe.model_version"] for s in g.gateway_spans(3)]
        assert versions == ["v-config", "", "step-8"]
        # Pause waits for the call in flight, holds new ones until resume.
        in_flight = threading.Thread(target=lambda: list(client.chat.completions.create(
            model="other", messages=chat(), stream=True)))
        in_flight.start()
        wait_for(lambda: up.requests == 4, 10, "the streamed call to start", poll=0.02)
        paused = requests.post(f"{g.url}/v1/gateway/pause", timeout=30)
        # The stream had ~0.8 s to run (4 chunks 0.2 s apart): pause returned only once it had ended.
        assert paused.json() == {"paused": True, "in_flight": 0} and paused.elapsed.total_seconds() > 0.4
        in_flight.join(5)
        held = threading.Thread(target=lambda: client.chat.completions.create(model="other", messages=chat()))
        held.start()
        time.sleep(0.5)
        assert held.is_alive() and up.requests == 4
        requests.post(f"{g.url}/v1/gateway/resume", timeout=5)
        held.join(10)
        assert not held.is_alive() and up.requests == 5
    with FakeOpenAI(token_ids="when_asked", model_version_header="x-model-version", model_version="step-9") as up2, \
            Gateway(tmp_path / "h", up2) as g2:
        g2.client().chat.completions.create(model="m", messages=chat())
        assert g2.gateway_spans(1)[0]["attributes"]["spanpipe.model_version"] == "step-9"


def test_auth_guards_calls_and_admin_and_token_ids_off_says_why(tmp_path, vllm):
    g = Gateway(tmp_path, vllm, auth={"authenticator": "bearertokenauth"}, request_token_ids=False)
    g.config["extensions"] = {"bearertokenauth": {"token": "gw-token"}}
    g.config["service"]["extensions"] = ["bearertokenauth"]
    with g.rewrite():
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{g.url}/v1", api_key="wrong", max_retries=0).chat.completions.create(
                model="m", messages=chat())
        assert requests.post(f"{g.url}/v1/gateway/pause", timeout=5).status_code == 401
        ok = openai.OpenAI(base_url=f"{g.url}/v1", api_key="gw-token", max_retries=0).chat.completions.create(
            model="m", messages=chat())
        assert ok.choices[0].message.content == answer(Q)
        assert "Authorization" not in vllm.headers[-1]  # the gateway's token is not the upstream's
        assert "return_token_ids" not in vllm.bodies[-1]
        span = g.gateway_spans(1)[0]
    assert span["attributes"]["spanpipe.token_ids.missing_reason"].startswith("not_requested")
    assert "prompt_token_ids" not in span["attributes"]


def test_a_node_fetch_client_gets_its_stream_and_the_call_is_recorded(tmp_path, vllm):
    script = """
const res = await fetch(process.argv[2] + '/v1/chat/completions', {method: 'POST',
  headers: {'Content-Type': 'application/json', 'x-rollout-id': 'ro-node'},
  body: JSON.stringify({model: 'm', stream: true, messages: [{role: 'user', content: 'What is 2 + 3?'}]})});
let text = '';
for await (const part of res.body) text += Buffer.from(part).toString();
const content = text.split('\\n').filter(l => l.startsWith('data: {')).map(l => JSON.parse(l.slice(6)))
  .map(c => (c.choices[0] && c.choices[0].delta.content) || '').join('');
console.log(content);
"""
    (tmp_path / "client.mjs").write_text(script)
    with Gateway(tmp_path, vllm) as g:
        out = subprocess.run(["node", str(tmp_path / "client.mjs"), g.url], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == answer(Q)
        span = g.gateway_spans(1)[0]
    assert span["rollout_id"] == "ro-node" and span["attributes"]["response_token_ids"] == tokens(answer(Q))


@pytest.mark.parametrize("shape", ["under", "beside"])
def test_an_instrumented_agent_gets_one_llm_call_per_call_with_the_gateways_token_ids(tmp_path, vllm, shape):
    rollout = f"ro-oi-{shape}"
    with Gateway(tmp_path, vllm) as g:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{g.grpc_endpoint}"}
        out = subprocess.run([sys.executable, "tests/instrumented_agent.py", "openinference", f"{g.url}/v1", rollout,
                              shape], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr
        reply_id = out.stdout.strip()
        wh = Warehouse.connect(g.query_url)
        wh.wait_for_rollouts([rollout], timeout=30)
        gateway = g.gateway_spans(1)[0]
        client_llm = [s for s in g.spans(f"rollout_id = '{rollout}' AND span_type = 'llm'")
                      if s["scope_name"] != "spanpipe.llm_gateway"]
        calls = wh.sql(f"SELECT * FROM llm_calls WHERE rollout_id = '{rollout}'").to_pylist()
        triplets = wh.triplets([rollout])
        one_by_one = wh.triplets([rollout], bulk=False)  # the reference tree, as the viewer reads a rollout
    # Both sides recorded the call, in the agent's trace and rollout (traceparent and baggage)...
    assert len(client_llm) == 1 and gateway["trace_id"] == client_llm[0]["trace_id"]
    assert gateway["rollout_id"] == rollout
    if shape == "under":
        assert gateway["parent_span_id"] == client_llm[0]["span_id"]
    else:
        assert gateway["parent_span_id"] == client_llm[0]["parent_span_id"]
    # ...and it is one call, with the gateway's token ids and logprobs.
    text = answer("What is 2 + 3?")
    assert len(calls) == 1 and calls[0]["span_id"] == gateway["span_id"] and calls[0]["response_id"] == reply_id
    assert calls[0]["response_token_ids"] == tokens(text) and calls[0]["prompt_token_ids"]
    assert len(json.loads(calls[0]["response_logprobs"])) == len(tokens(text))
    for got in (triplets, one_by_one):
        assert len(got) == 1
        assert got[0].response["token_ids"] == tokens(text)
        assert got[0].reward is not None


def test_metrics_count_calls_latency_and_time_to_first_token(tmp_path, vllm):
    with Gateway(tmp_path, vllm) as g:
        client = g.client()
        client.chat.completions.create(model="m", messages=chat())
        list(client.chat.completions.create(model="m", messages=chat(), stream=True))
        g.gateway_spans(2)
        port = g.config["service"]["telemetry"]["metrics"]["address"].rsplit(":", 1)[1]
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    lines = {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines() if ln and not ln.startswith("#")}
    assert lines['spanpipe_gateway_calls_total{operation="chat",outcome="ok",receiver="llm_gateway"}'] == 2
    assert lines['spanpipe_gateway_time_to_first_token_seconds_count{receiver="llm_gateway"}'] == 1
    assert lines['spanpipe_gateway_upstream_latency_seconds_count{receiver="llm_gateway"}'] == 2
    assert lines['spanpipe_gateway_in_flight{receiver="llm_gateway"}'] == 0
    assert lines['otelcol_receiver_accepted_spans_total{receiver="llm_gateway"}'] == 2


def test_an_sglang_upstream_is_asked_its_own_way_and_says_why_streams_have_no_ids(tmp_path):
    with FakeOpenAI(flavor="sglang") as sglang, Gateway(tmp_path, sglang, upstreams=[
            {"base_url": sglang.base_url, "token_ids_api": "sglang"}]) as g:
        reply = g.client().chat.completions.create(model="m", messages=chat())
        assert reply.choices[0].message.content == answer(Q)
        asked = sglang.bodies[-1]
        assert (asked["return_prompt_token_ids"], asked["return_meta_info"], asked["logprobs"]) == (True, True, True)
        assert "return_token_ids" not in asked  # vLLM's spelling, which SGLang would ignore
        # A streamed call is forwarded without the flags SGLang refuses with stream: true.
        streamed = "".join(c.choices[0].delta.content or "" for c in g.client().chat.completions.create(
            model="m", messages=chat(), stream=True) if c.choices)
        assert streamed == answer(Q) and "return_prompt_token_ids" not in sglang.bodies[-1]
        spans = g.gateway_spans(2)
    a = spans[0]["attributes"]
    assert a["prompt_token_ids"] == prompt_tokens(chat()) and a["response_token_ids"] == tokens(answer(Q))
    assert [e["logprob"] for e in json.loads(a["logprobs.content"])] == \
        [logprob_of(t, k) for k, t in enumerate(tokens(answer(Q)))]
    assert spans[1]["attributes"]["spanpipe.token_ids.missing_reason"].startswith("not_requested: SGLang")


@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
def test_a_call_ends_before_its_client_has_the_answer(tmp_path, vllm, stream):
    """A reward is matched to the calls that ended before it started, and an agent may emit its
    reward the moment the answer arrives: the gateway's span must not end later than that."""
    import http.client

    received: list[int] = []
    with Gateway(tmp_path, vllm) as g:
        conn = http.client.HTTPConnection("127.0.0.1", g.gateway_port, timeout=10)
        body = json.dumps({"model": "m", "stream": stream, "messages": [{"role": "user", "content": Q}]})
        for _ in range(20):
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            assert conn.getresponse().read()
            received.append(time.time_ns())
        conn.close()
        g.gateway_spans(20)
        ends = Warehouse.connect(g.query_url).sql(
            "SELECT end_time_unix_nano AS e FROM spans WHERE scope_name = 'spanpipe.llm_gateway' ORDER BY e"
        ).column("e").to_pylist()
    late = [(end - got) / 1e3 for end, got in zip(ends, received) if end > got]
    assert not late, f"{len(late)} of 20 calls ended after their client had the answer (µs later: {late})"
