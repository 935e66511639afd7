"""Token-level trajectories: the NumPy merge equals the plain-Python reference on random rollouts;
end to end through the llm_gateway with the fake vLLM-like upstream and a real collector."""

from __future__ import annotations

import math
import random

import numpy as np
import openai
import pyarrow as pa
import pytest
import requests
from opentelemetry import baggage, context, trace
from opentelemetry.propagate import inject

import json

from collector import run_cli, wait_for
from examples.fake_openai import FakeOpenAI, answer, logprob_of, prompt_tokens, tokens
from spanpipe.adapters.trajectories import SAMPLE_SCHEMA, BREAK_SCHEMA, Trajectories, merge_reference, stale
from spanpipe.adapters.trajectory_merge import REASON_NAMES, FlatCalls, merge_calls, offsets_of, sample_tokens
from spanpipe.warehouse.warehouse import Warehouse
from gateway_collector import Gateway


def random_attempt(rng: random.Random, n_calls: int) -> list[dict]:
    """Calls whose prompts grow turn by turn; some break the prefix, lose ids, change agent or version."""
    calls, history = [], [rng.randrange(1000) for _ in range(rng.randrange(3, 12))]
    for k in range(n_calls):
        response = [rng.randrange(1000) for _ in range(rng.randrange(1, 6))]
        prompt = list(history)
        roll = rng.random()
        if roll < 0.1 and len(prompt) > 1:  # a token inside the prompt changes
            prompt[rng.randrange(len(prompt))] += 1
        calls.append({"span_id": f"s{k}", "prompt": prompt, "response": response,
                      "logprobs": [rng.uniform(-3, 0) for _ in response],
                      "agent": "a" if rng.random() < 0.9 else "b", "version": "v1" if rng.random() < 0.95 else "v2"})
        if roll > 0.95:
            calls[-1]["response"] = []  # no token ids
        gap = [rng.randrange(1000) for _ in range(rng.randrange(0, 4))]
        said = list(response)
        if rng.random() < 0.1:
            said[-1] += 1  # the answer re-encoded differently in the next prompt
        history = prompt + said + gap
    return calls


def as_flat_calls(attempts: list[list[dict]]) -> FlatCalls:
    """Several attempts' calls, one after the other, as the flat arrays the merge reads."""
    calls = [c for raw in attempts for c in raw]
    p_len = np.array([len(c["prompt"]) for c in calls], np.int64)
    r_len = np.array([len(c["response"]) for c in calls], np.int64)
    p_off, r_off = offsets_of(p_len), offsets_of(r_len)
    codes: dict[str, int] = {}
    return FlatCalls(
        group=np.repeat(np.arange(len(attempts)), [len(raw) for raw in attempts]),
        agent=np.array([codes.setdefault(c["agent"], len(codes)) for c in calls], np.int64),
        version=np.array([codes.setdefault(c["version"], len(codes)) for c in calls], np.int64),
        prompt_values=np.array([t for c in calls for t in c["prompt"]], np.int32),
        prompt_start=p_off[:-1], prompt_end=p_off[1:],
        response_values=np.array([t for c in calls for t in c["response"]], np.int32),
        response_start=r_off[:-1], response_end=r_off[1:],
        logprobs=np.array([x for c in calls for x in c["logprobs"][:len(c["response"])]], np.float32))


def test_the_numpy_merge_equals_the_reference_on_random_rollouts():
    rng = random.Random(7)
    attempts = [random_attempt(rng, rng.randrange(1, 14)) for _ in range(400)]
    calls = as_flat_calls(attempts)
    merged = merge_calls(calls, "prefix")
    tokens = sample_tokens(calls, merged)
    span_of = [c["span_id"] for raw in attempts for c in raw]
    attempt_of = np.repeat(np.arange(len(attempts)), [len(raw) for raw in attempts])
    got_breaks = [(int(attempt_of[i]), REASON_NAMES[r], None if p < 0 else p) for i, r, p in
                  zip(merged.break_call.tolist(), merged.break_reason.tolist(), merged.break_position.tolist())]
    expected_breaks, expected_samples = [], []
    for a, raw in enumerate(attempts):
        samples, breaks = merge_reference(raw)
        expected_breaks += [(a, reason, position) for reason, position in breaks]
        expected_samples += samples
    assert got_breaks == expected_breaks
    assert len(merged.first) == len(expected_samples)
    p_off, r_off = tokens.prompt_offsets, tokens.response_offsets
    for s, ref in enumerate(expected_samples):
        assert tokens.prompt_ids[p_off[s]:p_off[s + 1]].tolist() == ref["prompt"]
        assert span_of[merged.first[s]:merged.last[s] + 1] == ref["spans"]
        assert tokens.response_ids[r_off[s]:r_off[s + 1]].tolist() == ref["response"]
        assert tokens.response_mask[r_off[s]:r_off[s + 1]].tolist() == ref["mask"]
        assert np.allclose(tokens.response_logprobs[r_off[s]:r_off[s + 1]], np.array(ref["logprobs"], np.float32),
                           equal_nan=True)
    assert {b[1] for b in got_breaks} == {"no_token_ids", "not_a_prefix", "response_retokenized", "different_agent",
                                          "different_model_version"}  # the random rollouts exercised every reason


def test_merge_none_makes_one_sample_per_call_with_ids():
    rng = random.Random(3)
    attempts = [random_attempt(rng, 6) for _ in range(30)]
    calls = as_flat_calls(attempts)
    merged = merge_calls(calls, "none")
    with_ids = [i for i, c in enumerate(c for raw in attempts for c in raw) if c["prompt"] and c["response"]]
    assert merged.first.tolist() == with_ids and merged.last.tolist() == with_ids
    assert {REASON_NAMES[r] for r in merged.break_reason.tolist()} <= {"no_token_ids"}


def test_staleness_compares_versions_as_integers_when_they_parse():
    assert stale(["step-3"], "step-10", 5) and not stale(["step-5"], "step-10", 5)
    assert stale(["7"], "10", 2) and not stale(["8", "10"], "10", 2)
    assert stale(["blue"], "green", 0) and not stale(["green"], "green", 0)
    assert not stale(["step-1"], None, 1) and not stale(["step-1"], "step-9", None)


def test_to_numpy_pads_like_verls_agent_loop():
    table = pa.table({
        "rollout_id": ["r1", "r2"], "attempt_id": ["a", "a"], "sample_index": pa.array([0, 0], pa.int32()),
        "prompt_ids": pa.array([[1, 2, 3], [4]], pa.list_(pa.int32())),
        "response_ids": pa.array([[5, 6], [7, 8, 9, 10]], pa.list_(pa.int32())),
        "response_mask": pa.array([[1, 1], [1, 0, 0, 1]], pa.list_(pa.int8())),
        "response_logprobs": pa.array([[-0.5, -1.0], [-0.1, math.nan, math.nan, -0.2]], pa.list_(pa.float32())),
        "reward": [1.0, 0.0], "num_turns": pa.array([1, 2], pa.int32()),
        "span_ids": [["x"], ["y", "z"]], "model_versions": [[""], ["", ""]], "task_id": [None, "t"]},
        schema=SAMPLE_SCHEMA)
    arrays = Trajectories(table, BREAK_SCHEMA.empty_table(), {}, None).to_numpy(pad_id=-1)
    assert arrays["prompts"].tolist() == [[1, 2, 3], [-1, -1, 4]]  # left-padded
    assert arrays["responses"].tolist() == [[5, 6, -1, -1], [7, 8, 9, 10]]  # right-padded
    assert arrays["input_ids"].shape == (2, 7) and arrays["attention_mask"].tolist() == \
        [[1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1]]
    assert arrays["position_ids"].tolist() == [[0, 1, 2, 3, 4, 4, 4], [0, 0, 0, 1, 2, 3, 4]]
    assert arrays["response_mask"].tolist() == [[1, 1, 0, 0], [1, 0, 0, 1]]
    assert np.allclose(arrays["rollout_log_probs"], [[-0.5, -1.0, 0, 0], [-0.1, 0, 0, -0.2]])
    assert arrays["rewards"].tolist() == [1.0, 0.0]
    assert Trajectories(table, BREAK_SCHEMA.empty_table(), {}, None).to_numpy(pad_to=(5, 6))["input_ids"].shape == (2, 11)
    with pytest.raises(ValueError):
        Trajectories(table, BREAK_SCHEMA.empty_table(), {}, None).to_numpy(pad_to=(2, 6))


TOOL = "the calculator says 42"


def agent_turns(client: openai.OpenAI, turns: int, headers: dict[str, str], retokenize_last: bool = False,
                extra_body: dict | None = None) -> list[list[dict]]:
    """A tool-using conversation: each turn appends the model's answer and a tool result."""
    messages = [{"role": "system", "content": "Use the tool."}, {"role": "user", "content": "What is 40 + 2?"}]
    sent = []
    for k in range(turns):
        sent.append(list(messages))
        reply = client.chat.completions.create(model="m", messages=messages, extra_headers=headers,
                                               extra_body=extra_body)
        said = reply.choices[0].message.content or ""
        if retokenize_last and k == turns - 2:
            said = said.replace(" ", "  ", 1)  # the agent re-renders its previous answer differently
        messages = messages + [{"role": "assistant", "content": said}, {"role": "tool", "content": f"{TOOL} ({k})"}]
    return sent


def test_trajectories_through_the_gateway(tmp_path):
    from spanpipe import emit

    with FakeOpenAI(token_ids="when_asked") as up, Gateway(tmp_path, up) as g:
        emit.configure(endpoint=f"http://{g.grpc_endpoint}", service_name="traj-agent")
        tracer = trace.get_tracer("test")
        client = g.client()

        def headers() -> dict[str, str]:
            h: dict[str, str] = {}
            inject(h)
            return h

        with emit.rollout(rollout_id="ro-three", task_id="t-1") as three_rollout:
            sent_three = agent_turns(client, 3, headers())
            emit.emit_reward(0.5)
        with emit.rollout(rollout_id="ro-retok", task_id="t-1"):
            sent_retok = agent_turns(client, 3, headers(), retokenize_last=True)
            emit.emit_reward(1.0)
        with emit.rollout(rollout_id="ro-noids", task_id="t-2"):
            agent_turns(client, 1, headers(), extra_body={"return_token_ids": False})
            agent_turns(client, 1, headers())
        with emit.rollout(rollout_id="ro-agents", task_id="t-2"):
            for name in ("planner", "coder"):
                with tracer.start_as_current_span(f"invoke_agent {name}", attributes={"gen_ai.agent.name": name,
                                                                                      "gen_ai.operation.name": "invoke_agent"}):
                    agent_turns(client, 2 if name == "planner" else 1, headers())
        with emit.rollout(rollout_id="ro-versions"):
            requests.post(f"{g.url}/v1/gateway/model_version", json={"model_version": "step-1"}, timeout=5)
            messages = [{"role": "user", "content": "What is 1 + 1?"}]
            first = client.chat.completions.create(model="m", messages=messages, extra_headers=headers())
            requests.post(f"{g.url}/v1/gateway/model_version", json={"model_version": "step-2"}, timeout=5)
            client.chat.completions.create(model="m", extra_headers=headers(), messages=messages + [
                {"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "Sure?"}])
        for attempt in ("at-old", "at-new"):  # two attempts of one rollout: the latest counts
            with emit.rollout(rollout_id="ro-attempts", attempt_id=attempt):
                agent_turns(client, 2 if attempt == "at-new" else 1, headers())
        wh = Warehouse.connect(g.query_url)
        all_ids = ["ro-three", "ro-retok", "ro-noids", "ro-agents", "ro-versions", "ro-attempts"]
        assert set(wh.wait_for_rollouts(all_ids, timeout=30)) == set(all_ids)
        groups = wh.wait_for_rollouts(group_size=2, timeout=30)
        assert {r: info["task_id"] for r, info in groups.items()} == \
            {"ro-three": "t-1", "ro-retok": "t-1", "ro-noids": "t-2", "ro-agents": "t-2"}
        wait_for(lambda: wh.sql("SELECT count(*) AS n FROM spans WHERE scope_name = 'spanpipe.llm_gateway'")
                 .column("n")[0].as_py() == 16, 15, "every gateway span")
        # A late reward: a judge scores ro-three after it completed; "final" is the latest reward.
        ctx = baggage.set_baggage("agentlightning.rollout_id", "ro-three")
        token = context.attach(baggage.set_baggage("agentlightning.attempt_id", three_rollout.attempt_id, ctx))
        emit.emit_reward(0.9)
        context.detach(token)
        emit.shutdown()
        late = Warehouse.connect(g.query_url)
        wait_for(lambda: late.rollouts(["ro-three"]).column("final_reward")[0].as_py() == 0.9, 15, "the late reward")
        result = late.trajectories(all_ids)
        per_call = late.trajectories(["ro-three"], merge="none", reward="per_turn")
        stale_cut = late.trajectories(["ro-versions"], merge="none", max_staleness=0, current_version="step-2")
        all_stale = late.trajectories(["ro-versions"], max_staleness=0, current_version="step-9")

    by_rollout = {}
    for row in result.table.to_pylist():
        by_rollout.setdefault(row["rollout_id"], []).append(row)
    breaks = {(b["rollout_id"], b["reason"]): b for b in result.breaks.to_pylist()}

    # Three turns with tool results between: one sample, masks and logprobs aligned token by token.
    [three] = by_rollout["ro-three"]
    assert three["num_turns"] == 3 and three["task_id"] == "t-1" and three["reward"] == 0.9
    assert three["prompt_ids"] == prompt_tokens(sent_three[0])
    final_prompt = prompt_tokens(sent_three[2])
    final_answer = tokens(answer("What is 40 + 2?"))
    assert three["prompt_ids"] + three["response_ids"] == final_prompt + final_answer
    expected_mask, expected_lp, pos = [], [], len(three["prompt_ids"])
    for k in range(3):
        gap = len(prompt_tokens(sent_three[k])) - pos
        expected_mask += [0] * gap + [1] * len(final_answer)
        expected_lp += [math.nan] * gap + [logprob_of(t, j) for j, t in enumerate(final_answer)]
        pos = len(prompt_tokens(sent_three[k])) + len(final_answer)
    assert three["response_mask"] == expected_mask
    assert np.allclose(np.array(three["response_logprobs"], np.float32), np.array(expected_lp, np.float32), equal_nan=True)
    assert len(three["span_ids"]) == 3

    # The previous answer re-encoded differently: two samples, a break where the answer starts to differ.
    assert [r["num_turns"] for r in by_rollout["ro-retok"]] == [2, 1]
    retok = breaks[("ro-retok", "response_retokenized")]
    # Turn 3's prompt re-renders turn 2's answer with its first space doubled: the sample so far
    # (= turn 2's prompt + answer) and turn 3's prompt part 4 tokens into that answer ("The " + " ").
    assert retok["position"] == len(prompt_tokens(sent_retok[1])) + 4
    assert retok["span_id"] == by_rollout["ro-retok"][1]["span_ids"][0]

    # A call without token ids: its own break, the next call starts a sample.
    assert ("ro-noids", "no_token_ids") in breaks and [r["num_turns"] for r in by_rollout["ro-noids"]] == [1]
    # Two agents: the planner's two turns merge; the coder starts anew.
    assert [r["num_turns"] for r in by_rollout["ro-agents"]] == [2, 1] and ("ro-agents", "different_agent") in breaks
    # A weight update between two calls.
    assert ("ro-versions", "different_model_version") in breaks
    assert [r["model_versions"] for r in by_rollout["ro-versions"]] == [["step-1"], ["step-2"]]
    assert [r["model_versions"] for r in stale_cut.table.to_pylist()] == [["step-2"]]
    assert len(all_stale) == 0 and "left out" in all_stale.reasons["ro-versions"]
    # Two attempts: only the latest.
    assert [(r["attempt_id"], r["num_turns"]) for r in by_rollout["ro-attempts"]] == [("at-new", 2)]
    # merge="none": one sample per call, the triplet view in tokens.
    assert len(per_call) == 3 and all(r["num_turns"] == 1 for r in per_call.table.to_pylist())
    arrays = result.to_numpy()
    assert arrays["input_ids"].shape[0] == len(result) and arrays["response_mask"].shape == arrays["responses"].shape

    # The command line, on the file the collector left.
    out = run_cli("trajectories", "--db", str(g.db), "--rollout", "ro-three", "--rollout", "ro-noids")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["rollout_id"], r["num_turns"]) for r in rows] == [("ro-three", 3), ("ro-noids", 1)]
    assert "2 sample(s); breaks: no_token_ids 1; 0 rollout(s) without samples" in out.stderr


def test_stored_logprobs_read_the_span_as_the_sql_fallback_does():
    """Trajectories take sampling logprobs from stored payloads, else DuckDB unpacks them from the
    span: both readings of `logprobs.content` must agree, whatever shape it has."""
    import duckdb
    import orjson

    from spanpipe.warehouse.payloads import sampling_logprobs

    entries = [{"token": "a", "logprob": -0.25}, {"token": "b", "logprob": -1}, {"token": "c"},
               {"token": "d", "logprob": None}]
    cases = [entries, orjson.dumps(entries).decode(), [], "not json", {"logprob": -1.0}, None,
             [{"token": "x", "logprob": -3.5, "top_logprobs": [{"token": "y", "logprob": -4.0}]}]]
    sql = ("SELECT list_transform(TRY(from_json(json(a->>'logprobs.content'), '[{\"logprob\":\"FLOAT\"}]')), "
           "lambda e: e.logprob) FROM (SELECT $a::JSON AS a)")
    for value in cases:
        attributes = orjson.dumps({} if value is None else {"logprobs.content": value}).decode()
        from_sql = duckdb.execute(sql, {"a": attributes}).fetchall()[0][0] or []
        assert sampling_logprobs(value) == from_sql, value


def test_logprobs_are_aligned_to_each_calls_response_tokens():
    """Each call's recorded logprobs land on its own response tokens, cut to its length, NaN where
    a call has none or recorded fewer (random calls against a per-call loop). The calls' response
    tokens lie in another order than the calls (as the stored payloads were read)."""
    from spanpipe.adapters.trajectories import _aligned_logprobs

    rng = np.random.default_rng(1)
    n = 200
    r_len = rng.integers(0, 6, n)
    laid = rng.permutation(n)  # laid[j]: the call whose tokens come j-th
    starts_laid = np.concatenate([[0], np.cumsum(r_len[laid])])[:-1]
    r_start = np.empty(n, np.int64)
    r_start[laid] = starts_laid
    size = int(r_len.sum())
    recorded = [None if rng.random() < 0.2 else [None if rng.random() < 0.1 else float(rng.normal())
                                                 for _ in range(rng.integers(0, 8))] for _ in range(60)]
    row, known = rng.integers(0, 60, n), rng.random(n) < 0.8
    got = _aligned_logprobs(pa.array(recorded, pa.list_(pa.float32())), row, known, r_start, r_len, size)
    expected = np.full(size, np.nan, np.float32)
    for i in range(n):
        lp = recorded[row[i]] if known[i] else None
        if lp:
            cut = np.array(lp[:r_len[i]], dtype=np.float32)
            expected[r_start[i]:r_start[i] + len(cut)] = cut
    assert np.array_equal(got, expected, equal_nan=True)
    assert np.isnan(got).any() and not np.isnan(got).all()


def test_agents_compare_as_one_text_whichever_path_wrote_the_metadata():
    """The bulk path writes the agent name last in the metadata; the reference path may put it
    elsewhere or escape it differently: the same name gives the same text either way."""
    from spanpipe.adapters.trajectories import _agents

    metadata = pa.chunked_array([[
        '{"request":{},"agent_name":"solver"}',      # bulk: last, cut as is
        '{"agent_name":"solver","request":{}}',      # elsewhere in the object
        '{"request":{},"agent_name":"caf\\u00e9"}',  # escaped by another encoder
        '{"request":{},"agent_name":"café"}',
        '{"request":{},"agent_name":null}',
        '{"request":{}}',                            # none at all
    ]])
    assert _agents(metadata).to_pylist() == ['"solver"', '"solver"', '"café"', '"café"', "null", "null"]
