"""The algorithm's API: views, wait_for_rollouts over the event stream, incremental cursors, the
event bus, and the triplets/rollouts CLI — against a real collector fed by a real emit agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

from spanpipe import events
from spanpipe.telemetry import counters
from spanpipe.warehouse.warehouse import EventStream, Warehouse
from tests.collector import Collector, run_cli

ROOT = Path(__file__).parents[1]

AGENT = """
    import sys
    from opentelemetry import trace
    from spanpipe import emit
    emit.configure(service_name="read-api-agent")
    llm = trace.get_tracer("llm")
    for rid in sys.argv[1:]:
        n = int(rid.split("-")[-1])
        try:
            with emit.rollout(rollout_id=rid, mode="val" if n % 2 else "train"):
                for k in range(2):
                    with llm.start_as_current_span("openai.chat.completion", attributes={
                            "gen_ai.response.id": f"{rid}-{k}", "gen_ai.usage.input_tokens": 10,
                            "gen_ai.usage.output_tokens": 5, "prompt_token_ids": [1, 2, n],
                            "response_token_ids": [3, k], "gen_ai.prompt.0.role": "user",
                            "gen_ai.prompt.0.content": f"task {n}"}):
                        pass
                emit.emit_reward({"task": n / 10, "style": 1.0}, primary_key="task")
                if n == 3:
                    raise RuntimeError("tool crashed")
        except RuntimeError:
            pass
    emit.shutdown()
"""


def run_agent(c: Collector, ids: list[str]) -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{c.grpc_endpoint}"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(AGENT), *ids], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_wait_for_rollouts_cursor_views_and_cli(tmp_path: Path) -> None:
    with Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}}) as c:
        wh = Warehouse.connect(c.query_url)
        first = [f"ro-{n}" for n in range(1, 6)]
        seen: list[dict] = []
        with EventStream(c.query_url, [events.ANY]) as stream:
            waiter: dict = {}
            t = threading.Thread(target=lambda: waiter.update(wh.wait_for_rollouts(first, timeout=60)))
            t.start()
            time.sleep(0.2)
            run_agent(c, first)
            t.join(70)
            deadline = time.monotonic() + 10
            while len([e for e in seen if e["type"] == "rollout_completed"]) < 5 and time.monotonic() < deadline:
                ev = stream.next(1.0)
                if ev is not None:
                    seen.append(ev)
        assert set(waiter) == set(first)
        assert waiter["ro-3"]["status"] == "failed" and waiter["ro-2"]["status"] == "succeeded"
        assert waiter["ro-4"]["final_reward"] == 0.4 and waiter["ro-4"]["mode"] == "train"
        kinds = {e["type"] for e in seen}
        assert {"rollout_started", "reward_extracted", "rollout_completed"} <= kinds
        started = {e["data"]["rollout_id"] for e in seen if e["type"] == "rollout_started"}
        assert started == set(first)

        batch1 = wh.triplets(since=0)
        assert {t.rollout_id for t in batch1} == set(first) and len(batch1) == 10
        assert all(t.reward is None for t in batch1 if t.metadata["response_id"].endswith("-0"))
        assert {t.rollout_id: t.reward for t in batch1 if t.metadata["response_id"].endswith("-1")} == \
            {f"ro-{n}": n / 10 for n in range(1, 6)}
        second = [f"ro-{n}" for n in range(6, 9)]
        run_agent(c, second)
        assert set(wh.wait_for_rollouts(second, timeout=30)) == set(second)
        batch2 = wh.triplets(since=batch1.cursor)
        assert {t.rollout_id for t in batch2} == set(second) and batch2.cursor > batch1.cursor
        assert wh.triplets(since=batch2.cursor) == []
        assert {t.rollout_id for t in wh.triplets(since=0, mode="val")} == {"ro-1", "ro-3", "ro-5", "ro-7"}
        # A rollout that never ran: the wait ends at the timeout with what did complete.
        t0 = time.monotonic()
        partial = wh.wait_for_rollouts(["ro-1", "ro-never"], timeout=1.0)
        assert set(partial) == {"ro-1"} and 0.9 < time.monotonic() - t0 < 5

        rollouts = {r["rollout_id"]: r for r in wh.rollouts().to_pylist()}
        assert set(rollouts) == set(first + second)
        r4 = rollouts["ro-4"]
        assert (r4["status"], r4["mode"], r4["spans"], r4["llm_calls"], r4["input_tokens"], r4["output_tokens"],
                r4["final_reward"], r4["attempts"]) == ("succeeded", "train", 4, 2, 20, 10, 0.4, 1)
        assert rollouts["ro-3"]["status"] == "failed"
        calls = wh.sql("SELECT * FROM llm_calls WHERE rollout_id = 'ro-2' ORDER BY sequence_id").to_pylist()
        assert [c["response_id"] for c in calls] == ["ro-2-0", "ro-2-1"]
        assert calls[0]["prompt_token_ids"] == [1, 2, 2] and calls[0]["input_tokens"] == 10
        assert json.loads(calls[0]["input_messages"]) == [{"role": "user", "parts": [{"type": "text", "content": "task 2"}]}]
        assert calls[0]["convention"] == "gen_ai_flat"
        dims = wh.sql("SELECT name, value, is_primary FROM rewards WHERE rollout_id = 'ro-5' ORDER BY idx").to_pylist()
        assert dims == [{"name": "task", "value": 0.5, "is_primary": True},
                        {"name": "style", "value": 1.0, "is_primary": False}]

        out = run_cli("triplets", "--since", "0", "--endpoint", c.query_url)
        assert out.returncode == 0, out.stderr
        lines = [json.loads(x) for x in out.stdout.splitlines()]
        assert len(lines) == 16 and "next cursor: " in out.stderr
        assert lines[0]["prompt"]["token_ids"] == [1, 2, 1] and lines[0]["rollout_id"] == "ro-1"
        pq_path = tmp_path / "t.parquet"
        out = run_cli("triplets", "--rollout", "ro-2", "--rollout", "ro-nope", "--format", "parquet",
                      "--out", str(pq_path), "--endpoint", c.query_url)
        assert out.returncode == 3, out.stderr  # an unknown rollout id is an error, said once
        assert out.stderr.count("no triplet for ro-nope: no spans stored") == 1
        table = pq.read_table(pq_path)
        assert table.column("rollout_id").to_pylist() == ["ro-2", "ro-2"]
        assert table.column("response_token_ids").to_pylist() == [[3, 0], [3, 1]]
        out = run_cli("rollouts", "--status", "failed", "--format", "json", "--endpoint", c.query_url)
        assert [r["rollout_id"] for r in json.loads(out.stdout)] == ["ro-3"]
        assert c.stop() == 0
    # From the file, after the collector is gone: same completions, same triplets.
    with Warehouse.open(c.db) as wh:
        assert set(wh.wait_for_rollouts(first + second, timeout=0)) == set(first + second)
        assert len(wh.triplets(since=0)) == 16


def test_event_bus_isolates_failing_and_slow_handlers() -> None:
    got: list[str] = []
    async_got: list[str] = []
    release = threading.Event()

    def failing(ev: events.Event) -> None:
        raise ValueError("handler bug")

    def slow(ev: events.Event) -> None:
        release.wait(5)

    async def async_handler(ev: events.Event) -> None:
        async_got.append(ev.data["rollout_id"])

    errors0, drops0 = counters.value("event_handler_errors"), counters.value("events_dropped")
    ids = [events.subscribe(events.ANY, failing), events.subscribe("rollout_completed", slow, queue_size=2),
           events.subscribe("rollout_completed", lambda ev: got.append(ev.data["rollout_id"])),
           events.subscribe("rollout_completed", async_handler),
           events.subscribe("memory_pressure", lambda ev: got.append("wrong"))]
    try:
        t0 = time.monotonic()
        for i in range(50):
            events.publish("rollout_completed", rollout_id=f"r{i}")
        assert time.monotonic() - t0 < 0.5  # publishing never waits for handlers
        deadline = time.monotonic() + 5
        while ((len(got) < 50 or len(async_got) < 50 or counters.value("event_handler_errors") - errors0 < 50)
               and time.monotonic() < deadline):  # each handler runs on its own thread
            time.sleep(0.01)
        assert got == [f"r{i}" for i in range(50)] and async_got == got
        assert counters.value("event_handler_errors") - errors0 == 50
        assert counters.value("events_dropped") - drops0 >= 47  # the slow handler's queue holds 2, one in hand
    finally:
        release.set()
        assert all(events.unsubscribe(i) for i in ids)
    assert not events.unsubscribe(ids[0])
    try:
        events.subscribe("no_such_event", print)
        raise AssertionError("unknown event type accepted")
    except ValueError as exc:
        assert "rollout_completed" in str(exc)
