"""The llm_gateway receiver with proxy worker processes (`workers: 2`): calls served from several
processes land as one pipeline's spans; pause, resume and the model version reach every worker; a
killed worker is replaced; metrics add up in the collector. (SIGTERM with streams in flight in the
workers: test_llm_gateway.py, parametrized.)"""

from __future__ import annotations

import os
import signal
import threading
import time

import openai
import requests

from collector import wait_for
from examples.fake_openai import FakeOpenAI, answer
from gateway_collector import Gateway

Q = "What is 2 + 3?"


def chat(text: str = Q) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def workers_of(g: Gateway) -> list[int]:
    """The collector's proxy worker processes (children running the gateway's worker)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if ppid == g.proc.pid and b"multiprocessing" in cmdline:
                out.append(int(entry))
    return out


def fresh_client(g: Gateway, **kw: object) -> openai.OpenAI:
    """A client of its own (its own connection: the kernel hands it to either worker)."""
    return g.client(**kw)


def metrics(g: Gateway) -> dict[str, float]:
    port = g.config["service"]["telemetry"]["metrics"]["address"].rsplit(":", 1)[1]
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines() if ln and not ln.startswith("#")}


def test_calls_from_several_workers_land_with_token_ids_and_metrics_add_up(tmp_path):
    with FakeOpenAI(token_ids="when_asked") as up, Gateway(tmp_path, up, workers=2) as g:
        assert len(workers_of(g)) == 2
        answers: list[str] = []

        def caller(k: int) -> None:
            client = fresh_client(g, default_headers={"x-rollout-id": f"ro-{k}"})
            for i in range(5):
                question = f"What is {k} + {i}?"
                if i % 2:
                    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                        model="m", messages=chat(question), stream=True) if c.choices)
                else:
                    text = client.chat.completions.create(model="m", messages=chat(question)).choices[0].message.content
                answers.append(text == answer(question))

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert answers == [True] * 40
        spans = g.gateway_spans(40)

        def settled() -> bool:  # workers report calls in flight every flush; a call leaves after its span
            m = metrics(g)
            return (m.get('spanpipe_gateway_calls_total{operation="chat",outcome="ok",receiver="llm_gateway"}') == 40
                    and m.get('spanpipe_gateway_in_flight{receiver="llm_gateway"}') == 0)

        wait_for(settled, 10, "40 calls counted, none in flight")
        m = metrics(g)
    assert len(spans) == 40 and len({s["attributes"]["gen_ai.response.id"] for s in spans}) == 40
    assert {s["rollout_id"] for s in spans} == {f"ro-{k}" for k in range(8)}
    assert all(s["attributes"]["response_token_ids"] for s in spans)
    assert m['spanpipe_gateway_time_to_first_token_seconds_count{receiver="llm_gateway"}'] == 16
    assert m['spanpipe_gateway_upstream_latency_seconds_count{receiver="llm_gateway"}'] == 40
    assert m['spanpipe_gateway_in_flight{receiver="llm_gateway"}'] == 0
    assert m['otelcol_receiver_accepted_spans_total{receiver="llm_gateway"}'] == 40


def test_pause_holds_calls_in_every_worker_and_the_model_version_reaches_all(tmp_path):
    with FakeOpenAI(token_ids="when_asked", chunk_delay=0.2) as up:
        g = Gateway(tmp_path, up, workers=2, auth={"authenticator": "bearertokenauth"})
        g.config["extensions"] = {"bearertokenauth": {"token": "gw-token"}}
        g.config["service"]["extensions"] = ["bearertokenauth"]
        with g.rewrite():
            held_calls_wait_in_every_worker(g, {"Authorization": "Bearer gw-token"})


def held_calls_wait_in_every_worker(g: Gateway, admin: dict[str, str]) -> None:
    """The trainer's admin calls (with the bearer token) reach whichever worker; their effect is
    everywhere."""
    assert requests.post(f"{g.url}/v1/gateway/pause", timeout=5).status_code == 401
    assert requests.post(f"{g.url}/v1/gateway/model_version", json={"model_version": "step-3"}, headers=admin,
                         timeout=10).json() == {"model_version": "step-3"}
    # Every worker has it before the trainer's request returns: asked on 10 new connections.
    for _ in range(10):
        assert requests.get(f"{g.url}/v1/gateway/model_version", headers=admin, timeout=5).json() == \
            {"model_version": "step-3"}
    for _ in range(6):
        fresh_client(g, api_key="gw-token").chat.completions.create(model="m", messages=chat())
    assert {s["attributes"]["spanpipe.model_version"] for s in g.gateway_spans(6)} == {"step-3"}

    # A stream in flight: pause returns only once it has ended (4 chunks 0.2 s apart).
    streaming = threading.Thread(target=lambda: list(fresh_client(g, api_key="gw-token").chat.completions.create(
        model="m", messages=chat(), stream=True)))
    streaming.start()
    time.sleep(0.2)
    paused = requests.post(f"{g.url}/v1/gateway/pause", headers=admin, timeout=30)
    assert paused.json()["paused"] is True and paused.elapsed.total_seconds() > 0.3
    streaming.join(5)
    assert not streaming.is_alive()
    done: list[float] = []
    held = [threading.Thread(target=lambda: (fresh_client(g, api_key="gw-token").chat.completions.create(
        model="m", messages=chat()), done.append(time.monotonic()))) for _ in range(6)]
    for t in held:
        t.start()
    time.sleep(0.6)
    assert done == []  # held, whichever worker took each connection
    resumed_at = time.monotonic()
    assert requests.post(f"{g.url}/v1/gateway/resume", headers=admin, timeout=10).json() == {"paused": False}
    for t in held:
        t.join(10)
    assert len(done) == 6 and min(done) >= resumed_at


def test_killed_workers_are_replaced_with_what_the_trainer_set_and_calls_go_on(tmp_path):
    with FakeOpenAI(token_ids="when_asked") as up, Gateway(tmp_path, up, workers=2) as g:
        before = workers_of(g)
        assert len(before) == 2
        requests.post(f"{g.url}/v1/gateway/model_version", json={"model_version": "step-5"}, timeout=10)
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        # One listing per check: two listings could see the killed pair still exiting, then neither
        # replaced yet (and pass with no worker replaced).
        wait_for(lambda: len(now := set(workers_of(g))) == 2 and not set(before) & now, 30, "two new workers",
                 poll=0.1)
        assert "proxy worker 0 exited" in g.log() and "proxy worker 1 exited" in g.log()
        for _ in range(6):
            reply = fresh_client(g).chat.completions.create(model="m", messages=chat())
            assert reply.choices[0].message.content == answer(Q)
        spans = g.gateway_spans(6)
    # only new workers answered: they began with the model version set before
    assert [s["attributes"]["spanpipe.model_version"] for s in spans] == ["step-5"] * 6


def test_workers_setting_is_checked(tmp_path):
    from collector import config_error

    with FakeOpenAI() as up:
        for value, expected in ((-1, "workers must be 0 or more, or auto"), ("some", "workers")):
            g = Gateway(tmp_path / str(value), up, workers=value)
            assert expected in config_error(g.config_path), value
        assert config_error(Gateway(tmp_path / "auto", up, workers="auto").config_path) == ""


def test_auto_is_one_proxy_process_per_core_and_the_default(monkeypatch):
    import os

    from spanpipe.receivers.llm_gateway import MAX_AUTO_WORKERS, LlmGatewayConfig

    upstreams = [{"model": "*", "base_url": "http://127.0.0.1:9/v1"}]
    assert LlmGatewayConfig(upstreams=upstreams).worker_count() == min(len(os.sched_getaffinity(0)), MAX_AUTO_WORKERS)
    assert LlmGatewayConfig(upstreams=upstreams, workers=3).worker_count() == 3
    assert LlmGatewayConfig(upstreams=upstreams, workers=0).worker_count() == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert LlmGatewayConfig(upstreams=upstreams, workers="auto").worker_count() == MAX_AUTO_WORKERS
