"""rollout and reward processors, through a real collector and a real OTel SDK client."""

from __future__ import annotations

import json

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from collector import Collector
from spanpipe.warehouse import Warehouse


def chain(tmp_path, rollout: dict | None = None, reward: dict | None = None) -> dict:
    return {"rollout": {"state_file": str(tmp_path / "rollout-state.jsonl"), **(rollout or {})},
            "reward": reward or {}, "batch": {"timeout": "20ms"}}


def provider_for(c: Collector, resource: dict) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create(resource))
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://{c.grpc_endpoint}", insecure=True),
                                             schedule_delay_millis=20))
    return tp


def stored(db) -> list[dict]:
    with Warehouse.open(db) as wh:
        return wh.sql("SELECT * FROM spans ORDER BY start_time_unix_nano").to_pylist()


def test_rollout_ids_from_resource_span_override_and_trace_propagation(tmp_path):
    with Collector(tmp_path, processors=chain(tmp_path)) as c:
        agent = provider_for(c, {"service.name": "agent", "agentlightning.rollout_id": "ro-a",
                                 "agentlightning.attempt_id": "at-a1"})
        other = provider_for(c, {"service.name": "tool-service"})  # no rollout ids at all
        t, t2 = agent.get_tracer("a"), other.get_tracer("b")
        with t.start_as_current_span("agent.run"):
            for i in range(3):
                with t.start_as_current_span("step"):
                    pass
            with t.start_as_current_span("override", attributes={"agentlightning.rollout_id": "ro-b",
                                                                  "agentlightning.span_sequence_id": 10}):
                pass
            with t.start_as_current_span("after-given", attributes={"agentlightning.rollout_id": "ro-b"}):
                pass
        agent.force_flush()
        # another service, same trace (context passed along), no ids: tagged through the trace
        with t.start_as_current_span("agent.again") as root:
            ctx = trace.set_span_in_context(root)
        agent.force_flush()
        import time
        time.sleep(0.3)
        with t2.start_as_current_span("remote.tool", context=ctx):
            pass
        with t2.start_as_current_span("orphan"):
            pass
        agent.shutdown()
        other.shutdown()
        assert c.stop() == 0
    rows = {r["name"]: r for r in stored(c.db)}
    assert rows["agent.run"]["rollout_id"] == "ro-a" and rows["agent.run"]["attempt_id"] == "at-a1"
    assert rows["override"]["rollout_id"] == "ro-b" and rows["override"]["sequence_id"] == 10
    assert rows["after-given"]["rollout_id"] == "ro-b" and rows["after-given"]["sequence_id"] == 11
    assert rows["remote.tool"]["rollout_id"] == "ro-a", "learned from the trace"
    assert rows["orphan"]["rollout_id"] is None and rows["orphan"]["sequence_id"] is None
    seqs = sorted(r["sequence_id"] for r in stored(c.db) if r["rollout_id"] == "ro-a")
    assert len(seqs) == 6
    assert seqs == list(range(1, len(seqs) + 1)), "per-rollout, from 1, no gaps"


def test_sequence_counters_survive_a_restart_and_on_missing(tmp_path):
    for run in range(2):
        with Collector(tmp_path, processors=chain(tmp_path, rollout={"on_missing": "drop"})) as c:
            tp = provider_for(c, {"agentlightning.rollout_id": "ro-r"})
            with tp.get_tracer("x").start_as_current_span(f"run-{run}"):
                pass
            tp.shutdown()
            plain = provider_for(c, {"service.name": "untagged"})
            with plain.get_tracer("x").start_as_current_span("dropped"):
                pass
            plain.shutdown()
            assert c.stop() == 0
    rows = {r["name"]: r for r in stored(c.db)}
    assert rows["run-0"]["sequence_id"] == 1 and rows["run-1"]["sequence_id"] == 2
    assert "dropped" not in rows


def test_rewards_from_every_convention_and_malformed_ones_keep_the_span(tmp_path):
    with Collector(tmp_path, processors=chain(tmp_path, reward={"extra_keys": ["my.score"]})) as c:
        tp = provider_for(c, {"agentlightning.rollout_id": "ro-w"})
        t = tp.get_tracer("r")
        spans = {
            "agl": ("agentlightning.annotation", {"agentlightning.reward.0.name": "task", "agentlightning.reward.0.value": 1.0,
                                                  "agentlightning.reward.1.name": "style", "agentlightning.reward.1.value": 0.25}),
            "legacy": ("agentlightning.annotation", {"reward": 0.5}),
            "agentops": ("agentops.task", {"agentops.task.output": json.dumps({"type": "reward", "value": 0.75})}),
            "oi": ("judge", {"annotations.0.annotation.name": "correct", "annotations.0.annotation.score": 0.9}),
            "extra": ("custom", {"my.score": 3}),
            "bad_value": ("agentlightning.annotation", {"agentlightning.reward.0.name": "x", "agentlightning.reward.0.value": "high"}),
            "bare": ("agentlightning.annotation", {"agentlightning.reward": 1.0}),
            "no_name": ("agentlightning.annotation", {"agentlightning.reward.0.value": 1.0}),
            "llm": ("openai.chat.completion", {"gen_ai.operation.name": "chat", "gen_ai.response.id": "resp-1"}),
            "tool": ("execute_tool search", {"gen_ai.operation.name": "execute_tool"}),
            "msg": ("agentlightning.message", {"agentlightning.message.body": "hi"}),
        }
        for label, (name, attrs) in spans.items():
            with t.start_as_current_span(name, attributes={**attrs, "label": label}) as s:
                if label == "llm":
                    s.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "helpful",
                                                             "gen_ai.evaluation.score.value": 0.6})
        tp.shutdown()
        assert c.stop() == 0
    with Warehouse.open(c.db) as wh:
        rows = {json.loads(r["attributes"])["label"]: r for r in wh.sql("SELECT * FROM spans").to_pylist()}
        dims = wh.sql("SELECT s.attributes->>'label' AS label, d.idx, d.name, d.value FROM reward_dimensions d "
                      "JOIN spans s USING (trace_id, span_id) ORDER BY label, idx").to_pylist()
    assert len(rows) == len(spans), "malformed rewards never drop a span"
    expect = {"agl": 1.0, "legacy": 0.5, "agentops": 0.75, "oi": 0.9, "extra": 3.0}
    for label, value in expect.items():
        assert (rows[label]["span_type"], rows[label]["reward"]) == ("reward", value), label
    for label in ("bad_value", "bare", "no_name"):
        assert rows[label]["reward"] is None and rows[label]["span_type"] != "reward", label
    assert rows["llm"]["span_type"] == "llm" and rows["llm"]["response_id"] == "resp-1"
    assert rows["llm"]["reward"] == 0.6, "an evaluation event scores the LLM call itself"
    assert rows["tool"]["span_type"] == "tool" and rows["msg"]["span_type"] == "message"
    assert [(d["name"], d["value"]) for d in dims if d["label"] == "agl"] == [("task", 1.0), ("style", 0.25)]


def test_sequence_ids_per_rollout_in_one_batch_with_and_without_ids_given(tmp_path):
    from componentkit import Sink, create, spans
    from spanpipe.processors import rollout

    def batch_of(rollouts: list[str | None], given: list[int | None]):
        batch, _ = spans(len(rollouts))
        for attrs, r, g in zip(batch.attributes, rollouts, given):
            attrs.update({} if r is None else {"agentlightning.rollout_id": r})
            attrs.update({} if g is None else {"agentlightning.span_sequence_id": g})
        return batch

    config = rollout.RolloutConfig(state_file=str(tmp_path / "state.jsonl"), propagate_by_trace=False)
    proc = create(rollout.factory, config, Sink())
    proc.start()
    try:
        out = proc.process(batch_of(["a", "b", None, "a", "a", "b"], [None] * 6))
        assert out.extra["sequence_id"] == [1, 1, None, 2, 3, 2]
        out = proc.process(batch_of(["b", "a", "b"], [None, 7, None]))  # a given id raises its counter
        assert out.extra["sequence_id"] == [3, 7, 4]
        out = proc.process(batch_of(["a", "c"], [None, None]))
        assert out.extra["sequence_id"] == [8, 1]
    finally:
        proc.shutdown()
    again = create(rollout.factory, config, Sink())
    again.start()
    try:
        assert again.process(batch_of(["a", "b", "c"], [None] * 3)).extra["sequence_id"] == [9, 5, 2]
    finally:
        again.shutdown()


def test_sequence_counters_kept_for_the_newest_max_rollouts_and_ids_never_repeat(tmp_path):
    """Past `max_rollouts`, the least recently active rollout's counter is forgotten; a rollout
    without a counter of its own counts on above every id a forgotten one had, so no rollout
    repeats an id — also after a restart."""
    from componentkit import Sink, create, spans
    from spanpipe.processors import rollout

    def seqs(proc, rollouts: list[str]) -> list[int]:
        batch, _ = spans(len(rollouts))
        for attrs, r in zip(batch.attributes, rollouts):
            attrs["agentlightning.rollout_id"] = r
        return proc.process(batch).extra["sequence_id"]

    config = rollout.RolloutConfig(state_file=str(tmp_path / "state.jsonl"), propagate_by_trace=False,
                                   max_rollouts=2)
    proc = create(rollout.factory, config, Sink())
    proc.start()
    try:
        assert seqs(proc, ["a", "a", "a", "b"]) == [1, 2, 3, 1]
        assert seqs(proc, ["b", "c"]) == [2, 1]  # a is forgotten: the floor is its 3
        assert list(proc.counters.highest) == ["b", "c"]
        assert seqs(proc, ["a", "d"]) == [4, 4]  # above 3; b and c forgotten
        assert list(proc.started) == ["a", "d"]  # the rollouts started: bounded alike
        assert seqs(proc, ["c"]) == [4]  # not 2: above every forgotten id; a (4) forgotten
    finally:
        proc.shutdown()
    again = create(rollout.factory, config, Sink())
    again.start()
    try:
        assert list(again.counters.highest) == ["d", "c"] and again.counters.floor == 4
        assert seqs(again, ["c", "a", "d", "c"]) == [5, 5, 5, 6]
    finally:
        again.shutdown()


def test_the_sequence_state_file_stays_the_size_of_what_is_kept(tmp_path, monkeypatch):
    """The state log is compacted as it grows: 20,000 rollouts through 50 kept leave a file of
    about 50 counters, which reads back to the same state (a torn last line ignored)."""
    import logging

    from spanpipe.processors import sequence_counters

    monkeypatch.setattr(sequence_counters, "_COMPACT_MIN_BYTES", 4096)
    path = tmp_path / "state.jsonl"
    kept = sequence_counters.SequenceCounters(str(path), 50, logging.getLogger("test"))
    for i in range(20_000):
        r = f"rollout-{i:05d}"
        kept.advance([r], {r: i % 7 + 1})
    kept.close()
    assert path.stat().st_size < 4 * 4096 + 4 * 50 * 24
    with open(path, "ab") as f:
        f.write(b'{"rollout-00000": 9')
    back = sequence_counters.SequenceCounters(str(path), 50, logging.getLogger("test"))
    assert back.highest == kept.highest and back.floor == kept.floor == 7
    assert list(back.highest)[-1] == "rollout-19999" and len(back.highest) == 50
    back.close()


def test_trace_memory_keeps_the_newest_max_traces_traces(tmp_path):
    """propagate_by_trace remembers at most `max_traces` traces, the least recently seen forgotten
    first; a trace seen again becomes the newest. Traces of one rollout share one stored pair."""
    from componentkit import Sink, create, spans
    from spanpipe.processors import rollout

    def batch_of(traces: list[str], rollouts: list[str | None]):
        batch, _ = spans(len(traces))
        batch.trace_id[:] = traces
        for attrs, r in zip(batch.attributes, rollouts):
            attrs.pop("agentlightning.rollout_id", None)
            attrs.update({} if r is None else {"agentlightning.rollout_id": r})
        return batch

    config = rollout.RolloutConfig(state_file=str(tmp_path / "state.jsonl"), max_traces=3)
    proc = create(rollout.factory, config, Sink())
    proc.start()
    try:
        t = [f"{i:032x}" for i in range(6)]
        proc.process(batch_of([t[0], t[1], t[2]], ["r0", "r0", "r1"]))
        assert proc.by_trace[t[0]] is proc.by_trace[t[1]]  # one (rollout, attempt) pair per rollout
        proc.process(batch_of([t[0]], ["r0"]))  # t0 seen again: now the newest
        proc.process(batch_of([t[3], t[4]], ["r3", "r4"]))  # t1 and t2 forgotten
        assert set(proc.by_trace) == {t[0], t[3], t[4]}
        out = proc.process(batch_of([t[0], t[1], t[4], t[5]], [None] * 4))
        assert out.extra["rollout_id"] == ["r0", None, "r4", None]
    finally:
        proc.shutdown()
