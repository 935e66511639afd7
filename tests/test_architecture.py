"""The core knows components only by contract: no module of the core imports a concrete component,
and the core's module-level imports form no circle. Read from the source with `ast`."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"spanpipe": ROOT / "pipeline", "spanpipe.receivers": ROOT / "receivers",
           "spanpipe.processors": ROOT / "processors", "spanpipe.exporters": ROOT / "exporters",
           "spanpipe.extensions": ROOT / "extensions"}
COMPONENT_PACKAGES = ("spanpipe.receivers", "spanpipe.processors", "spanpipe.exporters", "spanpipe.extensions")
# The CLI builds the registry (from entry points) and is the one place allowed to name components.
CORE_EXCEPTIONS = {"spanpipe.cli"}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "spanpipe" and parts and parts[0] in ("receivers", "processors", "exporters", "extensions"):
                continue
            out[name] = path
    return out


def module_level_imports(path: Path, known: set[str]) -> set[str]:
    """Modules imported when `path` is imported: top-level statements, not under TYPE_CHECKING
    and not inside functions."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import submodule` reaches the submodule; `from pkg import name`, pkg.
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if sub in known else node.module)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
    visit(tree.body)
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: module_level_imports(path, set(mods)) - {name} for name, path in mods.items()}


def core(name: str) -> bool:
    return not name.startswith(COMPONENT_PACKAGES)


def test_the_core_imports_no_concrete_component():
    offenders = {m: sorted(i for i in imports if not core(i))
                 for m, imports in graph().items() if core(m) and m not in CORE_EXCEPTIONS}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_the_core_has_no_import_circle():
    g = {m: {i for i in imports if core(i)} for m, imports in graph().items() if core(m)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strongconnect(v)
    assert circles == []


if __name__ == "__main__":  # print the core's import graph
    for m, imports in sorted(graph().items()):
        if core(m):
            print(f"{m} -> {', '.join(sorted(i for i in imports if i != m)) or '-'}")


def test_one_schema_for_batches_the_warehouse_the_lake_and_logs(tmp_path):
    import duckdb
    import pyarrow as pa

    from componentkit import log_records, spans
    from spanpipe import columns
    from spanpipe.lake import LAKE_SCHEMA
    from spanpipe.warehouse.schema import DDL

    table = spans(3)[0].to_arrow()
    value_types = [f.type.value_type if pa.types.is_dictionary(f.type) else f.type for f in table.schema]
    assert table.schema.names == [c.name for c in columns.SPANS]
    assert value_types == [c.arrow for c in columns.SPANS]
    assert LAKE_SCHEMA == columns.arrow_schema(columns.SPANS)
    assert log_records(2).table.schema == columns.arrow_schema(columns.LOGS)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    for stmt in DDL:
        con.execute(stmt)
    # the warehouse's spans add the columns it derives as it stores them; batches never carry those
    assert not {c.name for c in columns.DERIVED_SPANS} & set(table.schema.names)
    for table_name, cols in (("spans", columns.SPANS + columns.DERIVED_SPANS), ("logs", columns.LOGS)):
        described = con.execute(f"DESCRIBE {table_name}").fetchall()
        assert [(r[0], r[1]) for r in described] == [(c.name, c.sql.split()[0]) for c in cols]


def python_output(code: str) -> str:
    """What `code` prints in a fresh interpreter (whose modules are what a new process would load)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


LOAD_DEFAULT_CONFIG = ("import json, sys, spanpipe.cli as cli; from spanpipe.config import load_config; "
                       "r = cli.default_registry(); load_config('config/default.yaml', r); ")


def test_the_collector_imports_no_pydantic_plugin_installed_for_agents():
    """Logfire (a test dependency, as in many agent environments) registers a pydantic plugin that
    pydantic would import with the first config model: 40 MiB the memory limiter counts as idle."""
    loaded = python_output(LOAD_DEFAULT_CONFIG + "print(json.dumps(list(sys.modules)))")
    assert [m for m in json.loads(loaded) if m.split(".")[0] == "logfire"] == []


def test_a_config_imports_only_the_components_it_names():
    """The registry imports a factory's module when its type is first asked for: the default
    config loads its five components and not the others (the gateway, tail sampling, redaction,
    filter, the load balancer, parquet, otlphttp, the extensions); an alias (`otlp_grpc`) still
    resolves, by loading the rest of its kind."""
    first, alias = python_output(LOAD_DEFAULT_CONFIG + "print(json.dumps(list(sys.modules))); "
                                 "print(r.get('exporters', 'otlp_grpc').type)").splitlines()
    loaded = set(json.loads(first))
    named = {"receivers.otlp", "processors.rollout", "processors.reward", "processors.batch", "exporters.duckdb"}
    others = {"receivers.llm_gateway", "processors.tail_sampling", "processors.redaction", "processors.filter",
              "exporters.loadbalancing", "exporters.parquet", "exporters.otlphttp", "extensions.file_storage",
              "extensions.health_check"}
    assert {f"spanpipe.{m}" for m in named} <= loaded, loaded
    assert not {f"spanpipe.{m}" for m in others} & loaded, loaded
    assert alias == "otlp"


def test_clients_import_only_their_side():
    """An agent process pays only for the OTel SDK (`from spanpipe import emit`); a trainer's
    `Warehouse` client loads DuckDB and Arrow but none of the collector's servers (the query API's
    server once came with it, for one constant: 0.3 s on every `spanpipe sql`)."""
    heavy = ["duckdb", "pyarrow", "numpy", "aiohttp", "grpc", "prometheus_client"]
    for statement, allowed in (("from spanpipe import emit", set()),
                               ("from spanpipe.warehouse import Warehouse", {"duckdb", "pyarrow", "numpy"})):
        loaded = python_output(f"import json, sys; {statement}; print(json.dumps(list(sys.modules)))")
        assert set(heavy) & set(json.loads(loaded)) <= allowed, statement


def test_a_running_collector_does_not_load_pandas_nor_its_workers_numpy(tmp_path):
    """pandas is installed here (Ray brings it); pyarrow and DuckDB would import it on first use
    only to ask whether an object is a DataFrame: 40 MiB the memory limiter counts as idle. A decode
    worker also leaves out numpy, which pyarrow imports when present (11 MiB per worker)."""
    import importlib.util

    import requests

    from collector import Collector, wait_for
    from otlp_requests import make_request

    assert importlib.util.find_spec("pandas") is not None
    with Collector(tmp_path, decode_workers="auto", fresh_interpreter=True) as c:
        request, ids = make_request(20)
        r = requests.post(c.http_url + "/v1/traces", data=request.SerializeToString(),
                          headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200
        count = lambda: requests.post(c.query_url + "/v1/sql", json={"sql": "SELECT count(*) AS n FROM spans"},  # noqa: E731
                                      timeout=10).json()[0]["n"]
        wait_for(lambda: count() == len(ids), 10, "the spans stored")
        assert requests.get(c.query_url + "/ui/api/rollouts", timeout=10).status_code == 200
        maps = Path(f"/proc/{c.proc.pid}/maps").read_text()
        assert "/pandas/" not in maps
        from test_decode_workers import decode_workers
        workers = decode_workers(c.proc.pid)
        assert len(workers) == max(len(os.sched_getaffinity(0)) - 1, 0)  # decode_workers: auto
        assert workers
        for pid in workers:
            worker_maps = Path(f"/proc/{pid}/maps").read_text()
            assert "/pandas/" not in worker_maps
            assert "/numpy/" not in worker_maps
        assert "/numpy/" in maps  # the collector process needs it (DuckDB's Arrow UDFs): only workers leave it out
        assert c.stop() == 0
