"""spanpipe.emit: Agent Lightning 0.3's attributes for the same inputs, rollout tagging (also across
asyncio tasks and other instrumentations' spans), and round trips through a real collector."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spanpipe import emit
from spanpipe.warehouse.warehouse import Warehouse
from tests.collector import Collector
from tests.emit_cases import capture

FIXTURE = Path(__file__).parent / "fixtures" / "emit_attributes.json"


@pytest.fixture()
def memory() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    emit.configure(exporter=exporter, schedule_delay_millis=5)
    yield exporter
    emit.shutdown()


def finished(exporter: InMemorySpanExporter) -> list:
    emit.flush()
    return list(exporter.get_finished_spans())


def test_attributes_equal_agentlightning_0_3(memory: InMemorySpanExporter) -> None:
    expected = json.loads(FIXTURE.read_text())
    got = capture(emit, lambda: finished(memory), memory.clear)
    assert set(got) == set(expected)
    for case in expected:
        assert got[case] == expected[case], case


def test_propagate_false_returns_fields_without_sending(memory: InMemorySpanExporter) -> None:
    span = emit.emit_reward({"a": 2, "b": 0.5}, primary_key="b", propagate=False)
    assert span.name == "agentlightning.annotation" and span.status_code == "OK"
    assert span.attributes == {"agentlightning.reward.0.name": "b", "agentlightning.reward.0.value": 0.5,
                               "agentlightning.reward.1.name": "a", "agentlightning.reward.1.value": 2.0}
    assert emit.get_reward_value(span) == 0.5
    assert finished(memory) == []


def test_reading_helpers_on_sdk_spans_and_rows(memory: InMemorySpanExporter) -> None:
    emit.emit_message("hi")
    emit.emit_object(b"\x01\x02")
    emit.emit_object({"k": [1]})
    emit.emit_reward(0.25)
    emit.emit_reward(0.75)
    spans = finished(memory)
    rows = [{"name": s.name, "attributes": json.dumps(dict(s.attributes))} for s in spans]
    for form in (spans, rows):
        assert emit.get_message_value(form[0]) == "hi"
        assert emit.get_object_value(form[1]) == b"\x01\x02"
        assert emit.get_object_value(form[2]) == {"k": [1]}
        assert [emit.is_reward_span(s) for s in form] == [False, False, False, True, True]
        assert emit.find_reward_spans(form) == form[3:]
        assert emit.find_final_reward(form) == 0.75
    legacy = {"name": "agentlightning.annotation", "attributes": {"reward": 0.5}}
    agentops = {"name": "x", "attributes": {"agentops.task.output": '{"type": "reward", "value": 2.0}'}}
    assert emit.get_reward_value(legacy) == 0.5 and emit.get_reward_value(agentops) == 2.0


def test_rollout_tags_every_span_inside_and_closes_with_status(memory: InMemorySpanExporter) -> None:
    other = trace.get_tracer("some.instrumentation")
    with emit.rollout(mode="val", input={"q": "2+2"}) as r:
        with other.start_as_current_span("openai.chat.completion"):
            emit.emit_reward(1.0)
    with pytest.raises(RuntimeError):
        with emit.rollout(rollout_id="ro-given", attempt_id="at-given") as failed:
            raise RuntimeError("tool crashed")
    with other.start_as_current_span("outside"):
        pass
    spans = {s.name: s for s in finished(memory)}
    assert r.rollout_id.startswith("ro-") and len(r.rollout_id) == 15
    assert r.attempt_id.startswith("at-") and len(r.attempt_id) == 11
    for name in ("openai.chat.completion", "agentlightning.annotation"):
        assert spans[name].attributes["agentlightning.rollout_id"] == r.rollout_id
        assert spans[name].attributes["agentlightning.attempt_id"] == r.attempt_id
    assert "agentlightning.rollout_id" not in spans["outside"].attributes
    rollout_spans = [s for s in finished(memory) if s.name == "agentlightning.rollout"]
    ok, bad = rollout_spans
    assert ok.attributes["agentlightning.rollout.status"] == "succeeded" and ok.status.status_code.name == "OK"
    assert ok.attributes["agentlightning.rollout.mode"] == "val"
    assert ok.attributes["agentlightning.rollout.input.q"] == "2+2"
    assert bad.attributes["agentlightning.rollout_id"] == "ro-given" == failed.rollout_id
    assert bad.attributes["agentlightning.rollout.status"] == "failed" and bad.status.status_code.name == "ERROR"
    assert bad.attributes["exception.type"] == "RuntimeError"


def test_async_rollouts_in_parallel_never_mix_ids(memory: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("agent")

    async def agent(i: int) -> str:
        async with emit.rollout(rollout_id=f"ro-task{i:03d}") as r:
            for step in range(5):
                with tracer.start_as_current_span(f"step-{i}-{step}"):
                    await asyncio.sleep(0.001 * ((i * 7 + step) % 5))
            emit.emit_reward(float(i))
            return r.rollout_id

    async def main() -> list[str]:
        return await asyncio.gather(*(agent(i) for i in range(40)))

    assert asyncio.run(main()) == [f"ro-task{i:03d}" for i in range(40)]
    spans = finished(memory)
    assert len(spans) == 40 * 7
    for s in spans:
        rid = s.attributes["agentlightning.rollout_id"]
        if s.name.startswith("step-"):
            assert rid == f"ro-task{int(s.name.split('-')[1]):03d}"
        elif s.name == "agentlightning.annotation":
            assert rid == f"ro-task{int(s.attributes['agentlightning.reward.0.value']):03d}"


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})}, cwd=Path(__file__).parents[1])


def test_emit_without_tracer_is_a_clear_error() -> None:
    out = run_python("""
        from spanpipe import emit
        for call in (lambda: emit.emit_reward(1.0), lambda: emit.emit_message("m"),
                     lambda: emit.emit_object(1), lambda: emit.rollout().__enter__()):
            try:
                call()
                print("no error")
            except emit.EmitError as exc:
                print("EmitError", "configure" in str(exc))
        print(emit.emit_reward(1.0, propagate=False).attributes)
    """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:4] == ["EmitError True"] * 4
    assert lines[4] == "{'agentlightning.reward.0.name': 'primary', 'agentlightning.reward.0.value': 1.0}"


AGENT = """
    import os, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from spanpipe import emit

    own = InMemorySpanExporter()
    if os.environ.get("AGENT_HAS_PROVIDER"):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(own))
        trace.set_tracer_provider(provider)
    emit.configure(service_name="emit-agent")
    llm = trace.get_tracer("openai.instrumentation")
    for n in range(3):
        with emit.rollout(rollout_id=f"ro-{n}", attempt_id=f"at-{n}") as r:
            with llm.start_as_current_span("openai.chat.completion",
                                           attributes={"gen_ai.response.id": f"resp-{n}"}):
                pass
            emit.emit_message("thinking")
            emit.emit_object({"n": n})
            emit.emit_annotation({"note": "x"})
            with emit.operation(name="tool") as op:
                op.set_output(n)
            try:
                raise ValueError("bad")
            except ValueError as exc:
                emit.emit_exception(exc)
            emit.emit_reward({"task": float(n), "len": 1.0}, primary_key="task")
    emit.shutdown()
    print(len(own.get_finished_spans()))
"""

KINDS = {"agentlightning.rollout": "rollout", "openai.chat.completion": "llm", "agentlightning.message": "message",
         "agentlightning.object": "object", "agentlightning.annotation": None, "agentlightning.operation": "operation",
         "agentlightning.exception": "exception"}


@pytest.mark.parametrize("protocol,has_provider", [("grpc", False), ("http/protobuf", True)])
def test_round_trip_through_collector(tmp_path: Path, protocol: str, has_provider: bool) -> None:
    with Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "50ms"}}) as c:
        endpoint = f"http://{c.grpc_endpoint}" if protocol == "grpc" else c.http_url
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
        if has_provider:
            env["AGENT_HAS_PROVIDER"] = "1"
        out = run_python(AGENT, env)
        assert out.returncode == 0, out.stderr
        # The agent's own provider kept its exporter and also saw every span.
        assert int(out.stdout.strip()) == (24 if has_provider else 0)
        assert c.stop() == 0
    rows = Warehouse.open(c.db).sql(
        "SELECT name, rollout_id, attempt_id, sequence_id, span_type, reward, service_name, response_id, "
        "attributes FROM spans ORDER BY rollout_id, sequence_id").to_pylist()
    assert len(rows) == 24
    for n in range(3):
        mine = [r for r in rows if r["rollout_id"] == f"ro-{n}"]
        assert len(mine) == 8 and {r["attempt_id"] for r in mine} == {f"at-{n}"}
        assert sorted(r["sequence_id"] for r in mine) == list(range(1, 9))
        by_type = {}
        for r in mine:
            by_type.setdefault(r["name"], []).append(r)
        for name, kind in KINDS.items():
            if kind:
                assert by_type[name][0]["span_type"] == kind, name
        annotations = sorted(by_type["agentlightning.annotation"], key=lambda r: r["reward"] is None)
        assert annotations[0]["span_type"] == "reward" and annotations[0]["reward"] == float(n)
        assert annotations[1]["span_type"] == "annotation" and annotations[1]["reward"] is None
        assert by_type["openai.chat.completion"][0]["response_id"] == f"resp-{n}"
        rollout_attrs = json.loads(by_type["agentlightning.rollout"][0]["attributes"])
        assert rollout_attrs["agentlightning.rollout.status"] == "succeeded"
    if not has_provider:
        assert {r["service_name"] for r in rows} == {"emit-agent"}
