"""What current instrumentation libraries really send, replayed into a real collector: the request
bodies in tests/fixtures/conventions/ were recorded from each library by
tests/conventions/capture.py (`make capture-conventions`), byte for byte as its OTLP exporter sent
them. Every agent made one chat call ("What is 2 + 3?" → "The answer is 6.") inside its library's
own agent/trace spans; each must come out as exactly one LLM call with its messages, usage and
model, and one triplet — never the agent span."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests

from collector import Collector, wait_for
from spanpipe.warehouse.warehouse import Warehouse

FIXTURES = Path(__file__).parent / "fixtures" / "conventions"
LIBRARIES = sorted(p.stem for p in FIXTURES.glob("*.jsonl"))
SYSTEM, USER, ANSWER = "Answer exactly.", "What is 2 + 3?", "The answer is 6."
# What each library's call looks like once read: convention, the agent the triplet adapter finds
# above the call (Strands names it two spans up), the response id the library reports.
EXPECTED = {
    "agentops": ("gen_ai_flat", None, "chatcmpl-fake-1"),
    "genai_latest": ("gen_ai", None, "chatcmpl-fake-1"),
    "genai_latest_events": ("gen_ai_events", None, "chatcmpl-fake-1"),
    "pydantic_ai": ("gen_ai", "math_agent", "chatcmpl-fake-1"),
    "strands": ("gen_ai_events", "math_agent", None),
}


def replay(c: Collector, library: str) -> dict:
    lines = (FIXTURES / f"{library}.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    for line in lines[1:]:
        request = json.loads(line)
        r = requests.post(c.http_url + request["path"], data=base64.b64decode(request["body"]),
                          headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200, (library, r.status_code, r.text)
    return header


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("captured")
    with Collector(tmp, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}}, logs=True) as c:
        for library in LIBRARIES:
            replay(c, library)
        wh = Warehouse.connect(c.query_url)
        ids = [f"ro-{library}" for library in LIBRARIES]
        wait_for(lambda: set(wh.sql("SELECT DISTINCT rollout_id FROM spans").column(0).to_pylist()) >= set(ids), 15,
                 "every library's spans")
        for rid in ids:
            wh.complete_rollout(rid)
        assert set(wh.wait_for_rollouts(ids, timeout=30)) == set(ids)
        yield wh


def test_every_library_has_a_fixture() -> None:
    assert LIBRARIES == sorted(EXPECTED)
    for library in LIBRARIES:
        header = json.loads((FIXTURES / f"{library}.jsonl").read_text().splitlines()[0])
        assert header["library"] == library and all(header["versions"].values()), header
        assert header["agent_output"] == ANSWER


@pytest.mark.parametrize("library", sorted(EXPECTED))
def test_one_llm_call_with_messages_usage_and_model(warehouse: Warehouse, library: str) -> None:
    convention, agent, response_id = EXPECTED[library]
    rid = f"ro-{library}"
    calls = warehouse.sql(f"SELECT * FROM llm_calls WHERE rollout_id = '{rid}'").to_pylist()
    names = warehouse.sql(f"SELECT name FROM spans WHERE rollout_id = '{rid}' ORDER BY start_time_unix_nano").column(0)
    assert len(calls) == 1, (library, names.to_pylist(), [c["name"] for c in calls])
    call = calls[0]
    assert "invoke_agent" not in call["name"] and "session" not in call["name"]
    assert call["convention"] == convention
    assert (call["input_tokens"], call["output_tokens"]) == (60, 16)
    assert call["request_model"] == "fake-model"
    assert call["response_id"] == response_id
    if library == "pydantic_ai":
        assert call["agent_name"] == agent  # on the call span itself
    ins = [(m["role"], [p.get("content") for p in m["parts"]]) for m in json.loads(call["input_messages"])]
    assert ins == [("system", [SYSTEM]), ("user", [USER])]
    outs = json.loads(call["output_messages"])
    assert outs[0]["role"] == "assistant" and outs[0]["parts"][0]["content"] == ANSWER

    triplets = warehouse.triplets([rid])
    assert len(triplets) == 1 and not triplets.reasons
    assert triplets[0].prompt["raw_content"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    assert triplets[0].response["raw_content"][0]["content"] == ANSWER
    assert triplets[0].metadata["agent_name"] == (agent or "*")  # "*": no agent, as Agent Lightning says
