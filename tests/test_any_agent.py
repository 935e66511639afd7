"""Rollouts from any language: an agent that sends only its own spans (a Node agent on the real
@opentelemetry/sdk-node, a plain Python OTel SDK agent — no spanpipe helper, no
`agentlightning.rollout` span) completes once its root spans have ended and it has been idle,
with the status its root spans say, and gives triplets."""

from __future__ import annotations

import subprocess
from pathlib import Path

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags
import pytest

from collector import Collector, run_cli
from spanpipe import emit
from spanpipe.warehouse.warehouse import Warehouse, WarehouseError

NODE = Path(__file__).parent / "node"


def python_sdk_agent(endpoint: str, rollout_id: str) -> None:
    """What a plain OTel SDK agent sends: rollout ids as attributes, nothing from spanpipe."""
    provider = TracerProvider(resource=Resource.create({"service.name": "py-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracer = provider.get_tracer("py-agent")
    ids = {"agentlightning.rollout_id": rollout_id, "agentlightning.attempt_id": "at-py"}
    with tracer.start_as_current_span("agent", attributes=ids) as root:
        with tracer.start_as_current_span("chat qwen", attributes={
                **ids, "gen_ai.operation.name": "chat", "gen_ai.request.model": "qwen",
                "gen_ai.response.id": f"resp-{rollout_id}", "prompt_token_ids": [7, 8], "response_token_ids": [9]}):
            pass
        with tracer.start_as_current_span("agentlightning.annotation", attributes={
                **ids, "agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 0.25}):
            pass
        root.set_status(Status(StatusCode.OK))
    provider.shutdown()


def test_agents_without_a_rollout_span_complete_after_idle_and_give_triplets(tmp_path):
    processors = {"rollout": {"idle_timeout": "1s"}, "reward": {}, "batch": {"timeout": "20ms"}}
    with Collector(tmp_path, processors=processors) as c:
        for rollout, fail in (("ro-node-ok", []), ("ro-node-fail", ["fail"])):
            out = subprocess.run(["node", str(NODE / "agent.mjs"), c.http_url, rollout, *fail],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
        python_sdk_agent(c.grpc_endpoint, "ro-py")
        emit.configure(endpoint=f"http://{c.grpc_endpoint}", service_name="helper-agent")
        with emit.rollout(rollout_id="ro-helper"):
            emit.emit_reward(0.5)
        emit.shutdown()
        wh = Warehouse.connect(c.query_url)
        wanted = ["ro-node-ok", "ro-node-fail", "ro-py", "ro-helper"]
        done = wh.wait_for_rollouts(wanted, timeout=30)
        assert set(done) == set(wanted)
        statuses = {r: done[r]["status"] for r in wanted}
        triplets = {t.rollout_id: t for t in wh.triplets(since=0)}
        completions = wh.sql("SELECT rollout_id, count(*) AS n, any_value(span_id) AS span_id FROM rollout_completions "
                             "GROUP BY rollout_id").to_pylist()
        by_idle = wh.sql("SELECT rollout_id FROM spans WHERE attributes->>'spanpipe.rollout.completed_by' = "
                         "'idle_timeout' ORDER BY rollout_id").column("rollout_id").to_pylist()
    assert statuses == {"ro-node-ok": "succeeded", "ro-node-fail": "failed", "ro-py": "succeeded",
                        "ro-helper": "succeeded"}
    assert by_idle == ["ro-node-fail", "ro-node-ok", "ro-py"]  # the helper's own rollout span counted
    assert all(row["n"] == 1 for row in completions)  # each rollout completed once
    assert (triplets["ro-node-ok"].prompt["token_ids"], triplets["ro-node-ok"].response["token_ids"],
            triplets["ro-node-ok"].reward) == ([1, 2, 3], [4, 5], 1.0)
    assert triplets["ro-node-fail"].reward == 0.0
    assert (triplets["ro-py"].response["token_ids"], triplets["ro-py"].reward) == ([9], 0.25)


def test_an_explicit_completion_through_the_query_api(tmp_path):
    """A rollout whose roots never arrive (its parent lives in a service that does not export) is
    completed on request: POST /v1/rollouts/{id}/complete, once; unknown rollouts are a 404."""
    with Collector(tmp_path, processors={"rollout": {"idle_timeout": "1s"}, "reward": {},
                                         "batch": {"timeout": "20ms"}}) as c:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=c.grpc_endpoint, insecure=True)))
        remote = NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1)))
        with provider.get_tracer("t").start_as_current_span(
                "step", context=trace.set_span_in_context(remote),
                attributes={"agentlightning.rollout_id": "ro-open", "agentlightning.attempt_id": "at-1"}):
            pass
        provider.shutdown()
        wh = Warehouse.connect(c.query_url)
        assert wh.wait_for_rollouts(["ro-open"], timeout=3) == {}  # no root span: idle never completes it
        assert wh.complete_rollout("ro-open", status="failed") == \
            {"rollout_id": "ro-open", "attempt_id": "at-1", "status": "failed"}
        done = wh.wait_for_rollouts(["ro-open"], timeout=15)
        assert done["ro-open"]["status"] == "failed" and done["ro-open"]["attempt_id"] == "at-1"
        assert wh.complete_rollout("ro-open")["completed"] == "already"
        with pytest.raises(WarehouseError) as unknown:
            wh.complete_rollout("ro-nobody")
        assert unknown.value.status == 404
        rows = wh.sql("SELECT count(*) AS n FROM rollout_completions WHERE rollout_id = 'ro-open'")
    assert rows.column("n")[0].as_py() == 1


def test_a_late_reward_brings_the_rollout_back_to_cursor_readers(tmp_path):
    """A judge scores a rollout after it completed: its final reward becomes the judge's, an event
    says so, and the rollout is listed once more after the cursor a trainer already holds."""
    from opentelemetry import baggage, context

    from spanpipe.warehouse.warehouse import EventStream

    c = Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}})
    c.config["exporters"]["parquet"] = {"path": str(tmp_path / "lake")}  # the lake keeps late rewards too
    c.config["service"]["pipelines"]["traces"]["exporters"] = ["duckdb", "parquet"]
    with c.rewrite():
        emit.configure(endpoint=f"http://{c.grpc_endpoint}", service_name="late-agent")
        with emit.rollout(rollout_id="ro-late") as r:
            with trace.get_tracer("agent").start_as_current_span("chat qwen", attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.response.id": "resp-late",
                    "prompt_token_ids": [1, 2], "response_token_ids": [3]}):
                pass
            emit.emit_reward(0.5)
        emit.flush()
        wh = Warehouse.connect(c.query_url)
        assert wh.wait_for_rollouts(["ro-late"], timeout=15)["ro-late"]["final_reward"] == 0.5
        first = wh.triplets(since=0)
        assert [t.rollout_id for t in first] == ["ro-late"]
        with EventStream(c.query_url, ["rollout_completed"], None) as events_seen:
            ctx = baggage.set_baggage("agentlightning.rollout_id", "ro-late")
            token = context.attach(baggage.set_baggage("agentlightning.attempt_id", r.attempt_id, ctx))
            emit.emit_reward(0.9)  # the judge, after the rollout span ended
            context.detach(token)
            emit.shutdown()
            event = events_seen.next(15)
        again = wh.triplets(since=first.cursor)
        done = wh.completed_rollouts(["ro-late"])["ro-late"]
        row = wh.rollouts(["ro-late"]).to_pylist()[0]
        nothing_new = wh.triplets(since=again.cursor)
        assert c.stop() == 0
    with Warehouse.open_lake(tmp_path / "lake") as lake:
        lake_first = lake.triplets(since=0)
        lake_again = lake.triplets(since=1)
        lake_done = lake.completed_rollouts(["ro-late"])["ro-late"]
        lake_log = lake.sql("SELECT seq, final_reward FROM rollout_completions ORDER BY seq").to_pylist()
    assert lake_log == [{"seq": 1, "final_reward": 0.5}, {"seq": 2, "final_reward": 0.9}]
    assert lake_first.cursor == 2 and [t.rollout_id for t in lake_again] == ["ro-late"] and lake_again.cursor == 2
    assert lake_done["final_reward"] == 0.9
    assert event is not None and event["data"]["rollout_id"] == "ro-late"
    assert event["data"]["final_reward"] == 0.9 and event["data"]["late_reward"] is True
    assert [t.rollout_id for t in again] == ["ro-late"] and again.cursor > first.cursor
    assert done["final_reward"] == 0.9 and row["final_reward"] == 0.9
    assert row["last_reward_time_unix_nano"] > row["end_time_unix_nano"]
    assert len(nothing_new) == 0


def test_the_triplets_command_says_what_is_missing(tmp_path):
    processors = {"rollout": {"idle_timeout": "0s"}, "reward": {}, "batch": {"timeout": "20ms"}}
    with Collector(tmp_path, processors=processors) as c:
        emit.configure(endpoint=f"http://{c.grpc_endpoint}", service_name="cli-agent")
        tracer = trace.get_tracer("agent")
        messages = '[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]'
        with emit.rollout(rollout_id="ro-noids"):
            with tracer.start_as_current_span("chat qwen", attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.input.messages": messages}):
                pass
        with emit.rollout(rollout_id="ro-named"):
            for name in ("openai.chat.completion", "chat other"):
                with tracer.start_as_current_span(name, attributes={
                        "gen_ai.operation.name": "chat", "gen_ai.response.id": name,
                        "prompt_token_ids": [1], "response_token_ids": [2]}):
                    pass
        with tracer.start_as_current_span("chat qwen", attributes={  # no rollout span: still running
                "agentlightning.rollout_id": "ro-running", "gen_ai.operation.name": "chat",
                "prompt_token_ids": [5], "response_token_ids": [6]}):
            pass
        emit.shutdown()
        wh = Warehouse.connect(c.query_url)
        wh.wait_for_rollouts(["ro-noids", "ro-named"], timeout=15)
        ids = ["--rollout", "ro-noids", "--rollout", "ro-named", "--rollout", "ro-running"]
        plain = run_cli("triplets", *ids, "--endpoint", c.query_url)
        narrowed = run_cli("triplets", *ids, "--llm-call-match", r"^openai\.", "--endpoint", c.query_url)
        skipped = run_cli("triplets", *ids, "--skip-empty-token-spans", "--endpoint", c.query_url)
    assert plain.returncode == 0, plain.stderr
    assert len(plain.stdout.splitlines()) == 4
    assert "1 of 4 triplet(s) have no token ids:" in plain.stderr
    assert "1 × no_token_ids_recorded: OTel GenAI / OpenLLMetry records no prompt and response token ids; " \
           "route the agent's LLM calls through the llm_gateway receiver" in plain.stderr
    assert "ro-running is still running (not completed)" in plain.stderr
    assert len(narrowed.stdout.splitlines()) == 1  # only the span of that name, not every span typed llm
    assert [line for line in skipped.stdout.splitlines() if "ro-noids" in line] == []
    assert skipped.stderr.count("no triplet for ro-noids") == 1


def test_a_plain_otelcol_pipeline_still_gets_rollout_columns(tmp_path):
    """otlp → batch → duckdb + parquet, no rollout or reward processor: the warehouse and the lake
    still know rollouts, span types and rewards, and the log says what is missing, once."""
    with Collector(tmp_path) as c:  # the default test config: batch only
        c.config["exporters"]["parquet"] = {"path": str(tmp_path / "lake")}
        c.config["service"]["pipelines"]["traces"]["exporters"].append("parquet")
        c.rewrite()
        c.stop()
        c.start()
        emit.configure(endpoint=f"http://{c.grpc_endpoint}", service_name="plain")
        for k in range(2):
            with emit.rollout(rollout_id=f"ro-plain-{k}"):
                with trace.get_tracer("agent").start_as_current_span("chat qwen", attributes={
                        "gen_ai.operation.name": "chat", "gen_ai.response.id": f"resp-{k}",
                        "prompt_token_ids": [1, 2], "response_token_ids": [3]}):
                    pass
                emit.emit_reward(0.5 + k)
        emit.shutdown()
        wh = Warehouse.connect(c.query_url)
        done = wh.wait_for_rollouts(["ro-plain-0", "ro-plain-1"], timeout=15)
        triplets = wh.triplets(["ro-plain-0", "ro-plain-1"])
        types = wh.sql("SELECT DISTINCT span_type FROM spans ORDER BY 1").column("span_type").to_pylist()
        assert c.stop() == 0
    log = c.log()
    assert {r: d["final_reward"] for r, d in done.items()} == {"ro-plain-0": 0.5, "ro-plain-1": 1.5}
    assert [(t.rollout_id, t.response["token_ids"], t.reward) for t in triplets] == \
        [("ro-plain-0", [3], 0.5), ("ro-plain-1", [3], 1.5)]
    assert types == ["llm", "reward", "rollout"]
    for processor in ("rollout", "reward"):
        assert log.count(f"duckdb: the pipeline has no `{processor}` processor") == 1
        assert log.count(f"parquet: the pipeline has no `{processor}` processor") == 1
    lake = Warehouse.open_lake(tmp_path / "lake")
    assert {r["rollout_id"]: r["final_reward"] for r in lake.rollouts().to_pylist()} == \
        {"ro-plain-0": 0.5, "ro-plain-1": 1.5}


def test_agent_lightning_reward_forms(tmp_path):
    """The `@reward` decorator (sync and async) and the pre-0.3 reward span with a plain `reward`."""
    import asyncio

    @emit.reward
    def judge(x: float) -> float:
        return x * 0.5

    @emit.reward
    async def async_judge() -> float:
        return 0.25

    @emit.reward
    def undecided() -> None:
        return None

    with Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}}) as c:
        emit.configure(endpoint=f"http://{c.grpc_endpoint}", service_name="agl-forms")
        with emit.rollout(rollout_id="ro-sync"):
            assert judge(1.0) == 0.5
        with emit.rollout(rollout_id="ro-async"):
            assert asyncio.run(async_judge()) == 0.25
        with emit.rollout(rollout_id="ro-none"):
            with pytest.warns(UserWarning, match="not a number"):
                assert undecided() is None
        with emit.rollout(rollout_id="ro-legacy"):
            trace.get_tracer("old-agl").start_span("agentlightning.reward", attributes={"reward": 0.7}).end()
        emit.shutdown()
        done = Warehouse.connect(c.query_url).wait_for_rollouts(["ro-sync", "ro-async", "ro-none", "ro-legacy"],
                                                                timeout=15)
    assert {r: d["final_reward"] for r, d in done.items()} == \
        {"ro-sync": 0.5, "ro-async": 0.25, "ro-none": None, "ro-legacy": 0.7}
