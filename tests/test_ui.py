"""The web viewer in a real browser: Debian's headless Chromium driven by Playwright, against a
collector (otlp + llm_gateway) fed by a real OTel agent (tests/ui_agent.py) and the real `openai`
client through the gateway. What each page shows is checked against the warehouse and the triplet
adapter; every page is saved as a screenshot under test-artifacts/ui/."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
import pytest
import requests

from collector import wait_for
from examples.fake_openai import FakeOpenAI
from gateway_collector import Gateway
from spanpipe.adapters.triplets import TripletAdapter
from spanpipe.warehouse.warehouse import Warehouse

ROOT = Path(__file__).parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root in a container, with nothing reaching out to Google's services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
PLAIN = [f"ro-ui-{n:02d}" for n in range(10)]
SPECIAL = ["ro-ui-xss", "ro-ui-early", "ro-ui-nocall", "ro-ui-orphan"]
GATEWAY_ROLLOUT = "ro-ui-gw"
# One worker builds the viewer (a gateway collector, an agent run, Chromium) once for the module,
# rather than each worker its own (~5 s each).
pytestmark = pytest.mark.xdist_group("ui")


def run_agent(c: Gateway, ids: list[str]) -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{c.grpc_endpoint}"}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "ui_agent.py"), *ids], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def completions(wh: Warehouse) -> dict[str, dict[str, Any]]:
    return {r["rollout_id"]: r for r in wh.sql("SELECT * FROM rollout_completions ORDER BY seq").to_pylist()}


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Warehouse]]:
    tmp = tmp_path_factory.mktemp("ui")
    with FakeOpenAI(token_ids="when_asked") as upstream, Gateway(tmp, upstream) as c:
        run_agent(c, PLAIN + SPECIAL)
        client = c.client(f"/rollout/{GATEWAY_ROLLOUT}/attempt/at-1")
        client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "What is 2 + 3?"}])
        wh = Warehouse.connect(c.query_url)
        wait_for(lambda: wh.sql(f"SELECT 1 FROM spans WHERE rollout_id = '{GATEWAY_ROLLOUT}'").num_rows > 0, 15,
                 "the gateway's span")
        wh.complete_rollout(GATEWAY_ROLLOUT)
        wait_for(lambda: len(completions(wh)) == len(PLAIN + SPECIAL) + 1, 30, "every rollout completed")
        yield c, wh


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.problems = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}"))
    pg.on("console", lambda m: pg.problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    yield pg
    context.close()


def wait_js(pg: Any, predicate: str, timeout: float = 20) -> None:
    """Poll a JavaScript function until it returns true. (Playwright's wait_for_function evaluates
    strings with eval, which the viewer's Content-Security-Policy rightly forbids.)"""
    deadline = time.monotonic() + timeout
    while not pg.evaluate(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        pg.wait_for_timeout(100)


def screenshot(pg: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_overview_counts_rollouts_plots_every_final_reward_and_updates_live(viewer, page) -> None:
    c, wh = viewer
    done = completions(wh)
    page.goto(f"{c.query_url}/ui/")
    wait_js(page, f"() => document.querySelector('#rollouts-total .value')?.textContent === '{len(done)}'")
    assert page.text_content("#rollouts-failed .value") == "1"
    assert page.text_content("#rollouts-succeeded .value") == str(len(done) - 1)
    plotted = page.evaluate("""() => Chart.getChart(document.getElementById('reward-chart')).data.datasets
        .filter((d) => d.type === 'scatter').flatMap((d) => d.data.map((p) => [p.rollout, p.y, d.label]))""")
    expected = {rid: r["final_reward"] for rid, r in done.items() if r["final_reward"] is not None}
    assert {rid: y for rid, y, _ in plotted} == expected
    assert expected["ro-ui-07"] == 0.7 and expected["ro-ui-xss"] == 0.5
    assert {label for _, _, label in plotted} == {"train", "val"}  # one series per mode
    assert dict((rid, label) for rid, _, label in plotted)["ro-ui-03"] == "val"
    assert page.text_content("#token-coverage .value") == "100%"
    assert page.text_content("#warehouse-rows .value") not in ("", "0")
    assert page.text_content("#live-state") == "live"
    screenshot(page, "overview")

    page.evaluate("() => { window.__notReloaded = true; }")
    run_agent(c, ["ro-ui-live-11"])
    wait_js(page, f"() => document.querySelector('#rollouts-total .value')?.textContent === '{len(done) + 1}'")
    assert page.evaluate("() => window.__notReloaded") is True
    assert ["ro-ui-live-11", 1.1] in [p[:2] for p in page.evaluate(
        "() => Chart.getChart(document.getElementById('reward-chart')).data.datasets.flatMap((d) => d.data.map((p) => [p.rollout, p.y]))")]
    assert page.problems == []


def table_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("#rollouts tbody tr[data-rollout]", "rows => rows.map(r => r.dataset.rollout)")


def wait_loaded(page: Any, action: Any) -> None:
    before = page.evaluate("() => document.body.dataset.loaded || ''")
    action()
    wait_js(page, f"() => (document.body.dataset.loaded || '') !== {before!r}")


def test_rollouts_table_pages_sorts_and_filters_on_the_server(viewer, page) -> None:
    c, wh = viewer
    expected = wh.sql("SELECT rollout_id FROM spans WHERE rollout_id IS NOT NULL GROUP BY 1 "
                      "ORDER BY max(end_time_unix_nano) DESC, rollout_id").column("rollout_id").to_pylist()
    page.goto(f"{c.query_url}/ui/rollouts?size=5")
    page.wait_for_selector("body[data-loaded]")
    assert page.get_attribute("#summary", "data-total") == str(len(expected))
    seen = table_ids(page)
    while not page.is_disabled("#next"):
        wait_loaded(page, lambda: page.click("#next"))
        seen += table_ids(page)
    assert seen == expected
    screenshot(page, "rollouts")

    wait_loaded(page, lambda: page.select_option("select[name=status]", "failed"))
    assert table_ids(page) == ["ro-ui-03"]
    assert "status=failed" in page.url
    wait_loaded(page, lambda: page.select_option("select[name=status]", ""))
    wait_loaded(page, lambda: page.select_option("select[name=mode]", "val"))
    done = completions(wh)
    val = [rid for rid in expected if done.get(rid, {}).get("mode") == "val"]
    assert len(val) >= 5 and table_ids(page) == val[:5]
    assert page.get_attribute("#summary", "data-total") == str(len(val))
    wait_loaded(page, lambda: page.click("th[data-sort=final_reward]"))
    rewards = page.eval_on_selector_all("#rollouts tbody tr td:nth-child(4)", "cells => cells.map(c => Number(c.textContent))")
    assert rewards == sorted((done[rid]["final_reward"] for rid in val), reverse=True)[:5]
    wait_loaded(page, lambda: page.fill("input[name=id]", "xss") or page.press("input[name=id]", "Enter"))
    assert table_ids(page) == []  # ro-ui-xss is mode train: filters combine
    deep_link = page.url
    page.goto(deep_link)  # the view is in its URL
    page.wait_for_selector("body[data-loaded]")
    assert page.input_value("select[name=mode]") == "val" and page.input_value("input[name=id]") == "xss"

    r = requests.get(f"{c.query_url}/ui/api/rollouts", params={"status": "lost"}, timeout=10)
    assert r.status_code == 400 and "status must be one of" in r.json()["error"]
    assert requests.get(f"{c.query_url}/ui/api/rollouts", params={"sort": "1; DROP TABLE spans"}, timeout=10).status_code == 400
    assert page.problems == []


def reward_links_shown(page: Any) -> list[tuple[str, str | None, str]]:
    rows = page.eval_on_selector_all("#reward-links tbody tr", """rows => rows.map(r =>
        [r.dataset.reward, r.dataset.call || null, r.querySelector('.why').textContent])""")
    return [tuple(r) for r in rows]


def adapter_links(wh: Warehouse, rollout_id: str) -> list[tuple[str, str | None, str]]:
    (decision,) = TripletAdapter(wh).explain(rollout_id)
    return [(link.reward_span_id, link.call_span_id, link.why) for link in decision.reward_links]


def test_rollout_page_shows_chat_reward_lines_as_the_adapter_decided_and_runs_no_llm_content(viewer, page) -> None:
    c, wh = viewer
    page.goto(f"{c.query_url}/ui/rollouts/ro-ui-xss")
    page.wait_for_selector("body[data-loaded='1']")
    calls = page.text_content("#calls")
    for hostile in ("<script>window.__xss = 1</script>", '<img src=x onerror="window.__xss = 2">',
                    "javascript:window.__xss=3", '<a href="javascript:window.__xss=4">link</a>'):
        assert hostile in calls
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert page.eval_on_selector_all("#app img, #app script, #app iframe", "n => n.length") == 0
    hrefs = page.eval_on_selector_all("#app a", "links => links.map(a => a.getAttribute('href'))")
    assert hrefs and all(h.startswith(("#", "/ui/")) for h in hrefs)
    assert "tool call calculator" in calls and "tool result" in calls
    roles = page.eval_on_selector_all("#calls .msg .role", "r => r.map(x => x.textContent)")
    assert roles == ["system", "user", "tool", "assistant"]
    assert "token ids: prompt 4 of 12, response 2 of 4" in page.text_content("#calls .coverage")

    links = adapter_links(wh, "ro-ui-xss")
    assert reward_links_shown(page) == links and links[0][1] is not None
    assert "first_occurrence: the latest call that finished" in links[0][2]
    assert page.eval_on_selector_all("#reward-lines path", "p => p.map(x => [x.dataset.reward, x.dataset.call])") == \
        [[links[0][0], links[0][1]]]
    triplet_spans = page.eval_on_selector_all("#triplets tbody tr", "r => r.map(x => x.dataset.span)")
    assert triplet_spans == [links[0][1]]
    screenshot(page, "rollout")

    page.goto(f"{c.query_url}/ui/rollouts/ro-ui-early")
    page.wait_for_selector("body[data-loaded='1']")
    links = adapter_links(wh, "ro-ui-early")
    assert reward_links_shown(page) == links and links[0][1] is None and "scores no triplet" in links[0][2]
    assert page.eval_on_selector_all("#reward-lines path", "p => p.length") == 0
    assert page.problems == []  # no Content-Security-Policy report, no script error


def test_rollout_page_marks_virtual_nodes_deep_links_spans_and_says_why_no_triplets(viewer, page) -> None:
    c, wh = viewer
    chat = wh.sql("SELECT span_id FROM spans WHERE rollout_id = 'ro-ui-orphan' AND name = 'chat qwen'").column(0)[0].as_py()
    page.goto(f"{c.query_url}/ui/rollouts/ro-ui-orphan#span-{chat}")
    page.wait_for_selector("body[data-loaded='1']")
    virtual = page.eval_on_selector_all(".wf-row.virtual .wf-name", "n => n.map(x => x.textContent)")
    assert virtual == ["(virtual root)virtual", "(parent never stored)virtual"]
    assert page.get_attribute(f"#span-{chat}", "class").split() == ["wf-row", "selected"]
    assert page.text_content("#span-details h2") == "chat qwen"

    page.goto(f"{c.query_url}/ui/rollouts/ro-ui-nocall")
    page.wait_for_selector("body[data-loaded='1']")
    assert "No triplets: no LLM span matched" in page.text_content("#no-triplets")

    page.goto(f"{c.query_url}/ui/rollouts/{GATEWAY_ROLLOUT}")
    page.wait_for_selector("body[data-loaded='1']")
    ids = wh.sql(f"SELECT len(prompt_token_ids) AS p, len(response_token_ids) AS r FROM llm_calls "
                 f"WHERE rollout_id = '{GATEWAY_ROLLOUT}'").to_pylist()
    assert ids and ids[0]["p"] > 0
    assert f"token ids: prompt {ids[0]['p']} of {ids[0]['p']}, response {ids[0]['r']} of {ids[0]['r']}, with logprobs" \
        in page.text_content("#calls .coverage")

    page.goto(f"{c.query_url}/ui/rollouts/no-such-rollout")
    page.wait_for_selector("body[data-loaded='error']")
    assert "No span of rollout no-such-rollout is stored." in page.text_content("#app")


def test_sql_console_refuses_writes_shows_readable_times_and_downloads(viewer, page, tmp_path) -> None:
    c, wh = viewer
    spans_before = wh.sql("SELECT count(*) AS n FROM spans").column("n")[0].as_py()
    page.goto(f"{c.query_url}/ui/sql")
    page.wait_for_selector("#sql")
    page.fill("#sql", "DROP TABLE spans")
    page.click("#run")
    page.wait_for_selector("#result .error")
    assert "only SELECT queries are allowed" in page.text_content("#result .error")
    page.fill("#sql", "SELECT * FROM read_text('/etc/passwd')")
    page.click("#run")
    wait_js(page, "() => document.querySelector('#result .error')?.textContent.includes('not allowed')")

    sql = "SELECT rollout_id, end_time_unix_nano FROM rollout_completions ORDER BY seq"
    page.fill("#sql", sql)
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#result-table")
    cells = page.eval_on_selector_all("#result-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    done = completions(wh)
    assert [row[0] for row in cells] == list(done)
    assert all(row[1].endswith(" UTC") and row[1][:2] == "20" for row in cells)
    screenshot(page, "sql")

    with page.expect_download() as download:
        page.click("#download-csv")
    path = tmp_path / "out.csv"
    download.value.save_as(path)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["rollout_id", "end_time_unix_nano"] and [r[0] for r in rows[1:]] == list(done)
    href = page.get_attribute("#download-parquet", "href")
    table = pq.read_table(io.BytesIO(requests.get(f"{c.query_url}{href}", timeout=10).content))
    assert table.column("rollout_id").to_pylist() == list(done)

    page.goto(f"{c.query_url}/ui/sql?q=" + requests.utils.quote("SELECT 42 AS answer"))
    page.wait_for_selector("#result-table")
    assert page.text_content("#result-table tbody td") == "42"  # a console link runs its query
    assert wh.sql("SELECT count(*) AS n FROM spans").column("n")[0].as_py() >= spans_before
    # The browser reports the two refused queries' 403s, and nothing else (no CSP report, no error).
    assert len(page.problems) == 2 and all("status of 403" in p for p in page.problems), page.problems
