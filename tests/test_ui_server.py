"""The web viewer's server side without a browser: the bearer token (and the cookie that carries it
for a browser, under /ui/ only), the security headers, and `spanpipe ui` over a warehouse file and
over a Parquet lake after the collector stopped — read-only, no filesystem beyond the lake."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from collector import SPANPIPE, Collector, run_cli, wait_for
from spanpipe.warehouse.warehouse import Warehouse

ROOT = Path(__file__).parents[1]
TOKEN = "ui-s3cret"
IDS = [f"ro-ui-{n:02d}" for n in range(4)]


def run_agent(c: Collector, ids: list[str]) -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{c.grpc_endpoint}"}
    if c.config.get("extensions"):
        env["OTEL_EXPORTER_OTLP_HEADERS"] = f"authorization=Bearer {TOKEN}"
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "ui_agent.py"), *ids], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_viewer_behind_the_bearer_token_takes_it_once_as_a_cookie_for_ui_only(tmp_path: Path) -> None:
    c = Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}})
    c.config["extensions"] = {"bearertokenauth": {"token": TOKEN}}
    c.config["service"]["extensions"] = ["bearertokenauth"]
    c.config["exporters"]["duckdb"]["query"]["auth"] = {"authenticator": "bearertokenauth"}
    with c.rewrite():
        run_agent(c, IDS[:2])
        wh = Warehouse.connect(c.query_url, TOKEN)
        wait_for(lambda: wh.sql("SELECT count(*) AS n FROM rollout_completions").column("n")[0].as_py() == 2, 20)
        ui = c.query_url + "/ui"
        first = requests.get(f"{ui}/rollouts?status=failed", allow_redirects=False, timeout=10)
        assert first.status_code == 302
        where = urlsplit(first.headers["Location"])
        assert where.path == "/ui/login" and parse_qs(where.query)["next"] == ["/ui/rollouts?status=failed"]
        assert requests.get(f"{ui}/api/rollouts", timeout=10).status_code == 401
        assert requests.get(f"{ui}/static/ui.css", timeout=10).status_code == 200  # no data in there
        login = requests.get(f"{ui}/login", timeout=10)
        assert login.status_code == 200 and "script-src 'self'" in login.headers["Content-Security-Policy"]

        wrong = requests.post(f"{ui}/login", data={"token": "guess", "next": "/ui/rollouts"}, allow_redirects=False, timeout=10)
        assert wrong.status_code == 302 and "failed=1" in wrong.headers["Location"] and not wrong.cookies
        outside = requests.post(f"{ui}/login", data={"token": TOKEN, "next": "https://evil.example/"},
                                allow_redirects=False, timeout=10)
        assert outside.headers["Location"] == "/ui/"  # never sends the browser off the viewer
        session = requests.Session()
        ok = session.post(f"{ui}/login", data={"token": TOKEN, "next": "/ui/rollouts"}, allow_redirects=False, timeout=10)
        assert ok.status_code == 302 and ok.headers["Location"] == "/ui/rollouts"
        cookie = ok.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
        page = session.get(f"{ui}/api/rollouts", timeout=10)
        assert page.status_code == 200 and page.json()["total"] == 2
        assert page.headers["X-Content-Type-Options"] == "nosniff"

        # The cookie is the viewer's alone: not the SQL API's, not the one write the API takes.
        jar = {"spanpipe_token": TOKEN}
        assert requests.post(f"{c.query_url}/v1/sql", json={"sql": "SELECT 1"}, cookies=jar, timeout=10).status_code == 401
        assert requests.post(f"{c.query_url}/v1/rollouts/ro-ui-00/complete", cookies=jar, timeout=10).status_code == 401
        bearer = requests.get(f"{ui}/api/rollouts", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert bearer.status_code == 200


def start_ui(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([SPANPIPE, "ui", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("web viewer on "):
        proc.kill()
        raise AssertionError(f"spanpipe ui said {line!r}: {proc.stderr.read() if proc.stderr else ''}")
    return proc, line.split()[3].removesuffix("/ui/")


def stop_ui(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(20)


def test_ui_command_serves_a_file_and_a_lake_read_only_after_the_collector_stopped(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    c = Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}})
    c.config["exporters"]["parquet"] = {"path": str(lake)}
    c.config["service"]["pipelines"]["traces"]["exporters"] = ["duckdb", "parquet"]
    with c.rewrite():
        run_agent(c, IDS)
        wh = Warehouse.connect(c.query_url)
        wait_for(lambda: wh.sql("SELECT count(*) AS n FROM rollout_completions").column("n")[0].as_py() == 4, 20)
        told = run_cli("ui", "--db", str(c.db), timeout=30)
        assert told.returncode == 0 and f"its viewer is at {c.query_url}/ui/" in told.stdout
        assert c.stop() == 0

    for args in (["--db", str(c.db)], ["--lake", str(lake)]):
        proc, url = start_ui(*args)
        try:
            page = requests.get(f"{url}/ui/api/rollouts", params={"sort": "rollout_id", "dir": "asc"}, timeout=30).json()
            assert [r["rollout_id"] for r in page["rows"]] == IDS, args
            assert [r["status"] for r in page["rows"]] == ["succeeded", "succeeded", "succeeded", "failed"], args
            one = requests.get(f"{url}/ui/api/rollouts/ro-ui-02", timeout=30).json()
            assert one["final_reward"] == 0.2 and len(one["llm_calls"]) == 2 and len(one["triplets"]) == 2, args
            assert requests.get(f"{url}/ui/", timeout=10).status_code == 200
            ov = requests.get(f"{url}/ui/api/overview", timeout=30).json()
            assert ov["metrics"] is None and ov["rollouts_by_status"] == {"failed": 1, "succeeded": 3}, args
            for sql in ("SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM read_csv('/etc/passwd')",
                        "COPY spans TO '/tmp/x.csv'", "INSTALL httpfs"):
                refused = requests.post(f"{url}/ui/api/sql", json={"sql": sql}, timeout=10)
                assert refused.status_code == 403, (args, sql, refused.text)
            ok = requests.post(f"{url}/ui/api/sql", json={"sql": "SELECT count(*) AS n FROM spans"}, timeout=10).json()
            assert ok["rows"][0][0] > 0
        finally:
            assert stop_ui(proc) == 0

    missing = run_cli("ui", "--db", str(tmp_path / "none.duckdb"), timeout=30)
    assert missing.returncode == 1 and "no warehouse at" in missing.stderr


def test_the_viewers_connections_cannot_read_files_even_past_the_sql_check(tmp_path: Path) -> None:
    """The second wall: were the SQL check ever wrong, the connection itself refuses."""
    import duckdb
    import pytest

    from spanpipe.ui.standalone import file_connector, lake_connector

    from spanpipe.ui.standalone import CannotServe
    from spanpipe.warehouse.schema import DDL

    db = tmp_path / "w.duckdb"
    duckdb.connect(str(db)).close()
    with pytest.raises(CannotServe, match="not a spanpipe warehouse"):
        file_connector(db)
    with duckdb.connect(str(db)) as con:
        for stmt in DDL:
            con.execute(stmt)
    (tmp_path / "lake").mkdir()
    (tmp_path / "outside.csv").write_text("a\n1\n")
    for connect in (file_connector(db), lake_connector(tmp_path / "lake")):
        cur = connect()
        with pytest.raises(duckdb.Error, match="disabled|Permission"):
            cur.execute(f"SELECT * FROM read_csv('{tmp_path / 'outside.csv'}')").fetchall()
        with pytest.raises(duckdb.Error):
            cur.execute("SET enable_external_access = true")
