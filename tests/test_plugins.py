"""A component from a separate package: built and installed by the test (its own pyproject.toml
with a `spanpipe.exporters` entry point), then used by a collector's YAML — no file of this
repository changed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from collector import Collector, grpc_export, run_cli
from otlp_requests import make_request

PLUGIN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "spanpipe-ids-exporter"
        version = "0.1.0"

        [project.entry-points."spanpipe.exporters"]
        ids = "ids_exporter:factory"
    """,
    "ids_exporter.py": '''
        """Writes the id of every span it is sent to a file, one line each."""
        from spanpipe.exporterhelper import ExporterHelperConfig, QueuedExporter
        from spanpipe.registry import Factory


        class IdsConfig(ExporterHelperConfig):
            path: str

            def validate_config(self) -> None:
                if not self.path.endswith(".txt"):
                    raise ValueError("path: must end in .txt")


        class IdsExporter(QueuedExporter):
            def send(self, batch, timeout):
                with open(self.config.path, "a") as fh:
                    fh.writelines(f"{t} {s}\\n" for t, s in zip(batch.trace_id, batch.span_id))


        factory = Factory("ids", "exporters", IdsConfig, lambda cid, cfg: IdsExporter(cid, cfg))
    ''',
}


def install_plugin(tmp_path) -> dict[str, str]:
    src = tmp_path / "plugin"
    src.mkdir()
    for name, text in PLUGIN.items():
        (src / name).write_text(textwrap.dedent(text).lstrip())
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, capture_output=True, text=True)
    assert (site / "ids_exporter.py").exists()
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_a_separately_installed_exporter_runs_from_yaml(tmp_path):
    env = install_plugin(tmp_path)
    out_file = tmp_path / "ids.txt"
    c = Collector(tmp_path, env=env)
    c.config["exporters"]["ids/mine"] = {"path": str(out_file), "sending_queue": {"queue_size": 10}}
    c.config["service"]["pipelines"]["traces"]["exporters"].append("ids/mine")
    c.rewrite()
    with c:
        req, ids = make_request(7)
        assert grpc_export(c.grpc_endpoint, req)[0] == "OK"
        assert c.stop() == 0
    assert sorted(tuple(line.split()) for line in out_file.read_text().splitlines()) == sorted(ids)

    c.config["exporters"]["ids/mine"]["path"] = str(tmp_path / "ids.csv")
    out = run_cli("validate", "--config", str(c.rewrite().config_path), env=env)
    assert out.returncode != 0 and "exporters::ids/mine" in out.stderr and "must end in .txt" in out.stderr
    out = run_cli("validate", "--config", str(c.config_path))  # not installed here: an unknown type
    assert out.returncode != 0 and "ids" in out.stderr


def test_two_packages_naming_the_same_type_is_a_clear_error(tmp_path):
    env = install_plugin(tmp_path)
    site = tmp_path / "site"
    dist = next(site.glob("spanpipe_ids_exporter-*.dist-info"))
    (site / "dup_exporter.py").write_text(
        "from ids_exporter import IdsConfig, IdsExporter\nfrom spanpipe.registry import Factory\n"
        "factory = Factory('duckdb', 'exporters', IdsConfig, lambda cid, cfg: IdsExporter(cid, cfg))\n")
    (dist / "entry_points.txt").write_text('[spanpipe.exporters]\nduckdb = dup_exporter:factory\n')
    c = Collector(tmp_path, env=env)
    out = run_cli("validate", "--config", str(c.config_path), env=env)
    assert out.returncode != 0
    assert "two exporters are named 'duckdb'" in out.stderr, out.stderr
    assert "package 'spanpipe-ids-exporter'" in out.stderr and "package 'spanpipe'" in out.stderr, out.stderr
