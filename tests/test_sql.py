"""`spanpipe sql`: on a file with no collector, through a running collector, and what it refuses."""

from __future__ import annotations

import json

import requests

from collector import Collector, run_cli
from spanpipe.warehouse import Warehouse
from otlp_requests import make_request
from test_otlp_http_grpc import grpc_export, wait_rows


def _load(c: Collector, n: int = 4) -> list[tuple[str, str]]:
    req, ids = make_request(n, service="sqltest")
    grpc_export(c.grpc_endpoint, req.SerializeToString())
    assert len(wait_rows(c, n)) == n
    return ids


def test_sql_through_a_running_collector_and_refusals(tmp_path):
    with Collector(tmp_path) as c:
        ids = _load(c)
        # found through <db>.endpoint, as a user would call it
        r = run_cli("sql", "--db", str(c.db), "--format", "json",
                    "SELECT span_id, attributes->>'str' AS s FROM spans ORDER BY span_id")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert [o["span_id"] for o in out] == sorted(s for _, s in ids)
        assert out[0]["s"] == 'héllo "quoted"'
        r = run_cli("sql", "--endpoint", c.query_url, "SELECT service_name, count(*) AS n FROM spans GROUP BY 1")
        assert r.returncode == 0 and "sqltest" in r.stdout and "(1 row)" in r.stdout
        r = run_cli("sql", "--db", str(c.db), "--format", "csv", "SELECT count(*) AS n FROM spans")
        assert r.stdout.splitlines() == ["n", "4"]

        for bad, why in [
            ("DROP TABLE spans", "only SELECT"),
            (f"COPY spans TO '{tmp_path}/out.csv'", "only SELECT"),
            ("SELECT * FROM read_csv('/etc/passwd')", "table function 'read_csv'"),
            ("SELECT * FROM '/etc/passwd'", "unknown table"),
            (f"ATTACH '{tmp_path}/x.duckdb'", "only SELECT"),
            ("SELECT getenv('HOME')", "function 'getenv'"),
            ("SELECT 1; DROP TABLE spans", "exactly one statement"),
            ("INSERT INTO spans (trace_id, span_id) VALUES ('a', 'b')", "only SELECT"),
        ]:
            r = run_cli("sql", "--db", str(c.db), bad)
            assert r.returncode == 1 and why in r.stderr, (bad, r.stderr)
        assert not (tmp_path / "out.csv").exists()
        # the HTTP API itself: JSON in, JSON out; refusal is 403; CTEs are fine
        resp = requests.post(f"{c.query_url}/v1/sql", json={"sql": "WITH x AS (SELECT * FROM spans) SELECT count(*) AS n FROM x"}, timeout=10)
        assert resp.status_code == 200 and resp.json() == [{"n": 4}]
        resp = requests.post(f"{c.query_url}/v1/sql", json={"sql": "DELETE FROM spans"}, timeout=10)
        assert resp.status_code == 403
        # `curl -d '{"sql": ...}'` sends JSON as a form: read by its shape, not run as SQL text.
        resp = requests.post(f"{c.query_url}/v1/sql", data='{"sql": "SELECT 1 AS x"}', timeout=10,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status_code == 200 and resp.json() == [{"x": 1}]
        assert len(wait_rows(c, 4)) == 4, "nothing was changed"
        # A statement naming many ids inline, as the adapters build them (~2 MB of SQL).
        many = ", ".join(f"'{i:032x}'" for i in range(60_000))
        found = Warehouse.connect(c.query_url).sql(f"SELECT count(*) AS n FROM spans WHERE span_id IN ({many}, '{ids[0][1]}')")
        assert found.column("n").to_pylist() == [1]
        assert c.stop() == 0

    # no collector: the file directly
    r = run_cli("sql", "--db", str(c.db), "SELECT count(*) AS n FROM spans")
    assert r.returncode == 0 and "4" in r.stdout
    r = run_cli("sql", "--db", str(c.db), "DROP TABLE spans")
    assert r.returncode == 1 and "read-only" in r.stderr.lower()
    r = run_cli("sql", "--db", str(tmp_path / "missing.duckdb"), "SELECT 1")
    assert r.returncode == 1 and "no warehouse at" in r.stderr
    # As on a terminal: long cells cut, times readable.
    r = run_cli("sql", "--db", str(c.db), "--max-width", "12", "SELECT attributes, 1764547200123456789 AS "
                "start_time_unix_nano FROM spans LIMIT 1")
    cells = r.stdout.splitlines()[2].split(" | ")
    assert len(cells[0].strip()) == 12 and cells[0].strip().endswith("…")
    assert cells[1].strip() == "2025-12-01 00:00:00.123Z"


def test_stale_endpoint_file_falls_back_to_the_file(tmp_path):
    with Collector(tmp_path) as c:
        _load(c, 2)
        c.kill()  # kill -9: the endpoint file stays behind
    assert c.db.with_name("spans.duckdb.endpoint").exists()
    r = run_cli("sql", "--db", str(c.db), "SELECT count(*) AS n FROM spans")
    assert r.returncode == 0 and "2" in r.stdout, r.stderr


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == "spanpipe 0.1.0"


def test_run_and_validate_find_the_packaged_default_config_from_any_directory(tmp_path):
    r = run_cli("validate", cwd=tmp_path)
    assert r.returncode == 0 and "default.yaml: valid (2 pipeline(s): traces, logs)" in r.stdout


def test_every_cli_option_says_what_it_does():
    import argparse

    from spanpipe.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [f"{name} {action.option_strings or action.dest}" for name, sub in commands.items()
               for action in sub._actions if action.dest != "help" and not action.help]
    assert missing == []
