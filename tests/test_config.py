"""Config loading: otelcol shape, env substitution, strict validation naming the YAML path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from collector import config_error, run_cli
from spanpipe.registry import Registry
from spanpipe.config import load_config, parse_config
from spanpipe.errors import ConfigError

REGISTRY = Registry.from_entry_points()

ROOT = Path(__file__).resolve().parents[1]

BASE = """
receivers:
  otlp:
    protocols:
      grpc:
processors:
  batch:
    timeout: 1s
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
"""


def validate(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return run_cli("validate", "--config", str(p), env=env)


@pytest.mark.parametrize("config", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "config").rglob("*.yaml")))
def test_shipped_configs_validate(config):
    """In-process: `spanpipe validate` is `load_config` and a line; the CLI itself is run below."""
    cfg = load_config(ROOT / config, REGISTRY, env={**os.environ, "SPANPIPE_TOKEN": "a-token"})
    assert cfg.pipelines


@pytest.mark.parametrize("text, env, message", [
    (BASE.replace("timeout: 1s", "sendbatchsize: 10"), {}, "processors::batch: unknown key 'sendbatchsize'"),
    (BASE.replace("debug:\nservice", "debug:\n  kafka:\nservice"), {}, "exporters::kafka: unknown exporter type 'kafka'"),
    (BASE.replace("processors: [batch]", "processors: [batch, batch/2]"), {},
     "service::pipelines::traces::processors: references processor 'batch/2' which is not configured"),
    (BASE.replace("timeout: 1s", "timeout: 5 parsecs"), {}, "processors::batch::timeout: invalid duration '5 parsecs'"),
    (BASE.replace("timeout: 1s", "timeout: ${env:SPANPIPE_TEST_UNSET}"), {},
     "processors::batch::timeout: environment variable 'SPANPIPE_TEST_UNSET' is not set"),
    (BASE.replace("timeout: 1s", "send_batch_size: -5"), {}, "processors::batch::send_batch_size: Input should be greater than or equal to 0"),
    (BASE.replace("      grpc:", "      grpc:\n        endpoint: nowhere"), {}, "receivers::otlp::protocols::grpc::endpoint: invalid endpoint 'nowhere'"),
    (BASE.replace("    traces:", "    metrics:"), {}, "service::pipelines::metrics: unsupported signal 'metrics'"),
    (BASE + "extra_top: 1\n", {}, "extra_top: unknown top-level key"),
    ("receivers: [oops", {}, "invalid YAML at line 1"),
    (BASE.replace("exporters: [debug]", "exporters: []"), {}, "service::pipelines::traces::exporters: at least one exporter is required"),
    (BASE.replace("  debug:\n", "  debug:\n  duckdb:\n    row_group_size: 10000\n"), {},
     "row_group_size: must be a multiple of 2048 (DuckDB's vector size), got 10000"),
])
def test_validate_rejects_with_the_yaml_path(tmp_path, text, env, message):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    error = config_error(p, env)
    assert message in error, error


def test_the_validate_command_says_what_is_wrong_or_which_pipelines_it_found(tmp_path):
    r = validate(tmp_path, BASE.replace("debug:\nservice", "debug:\n  kafka:\nservice"))
    assert r.returncode == 1 and "error:" in r.stderr and "exporters::kafka: unknown exporter type 'kafka'" in r.stderr
    r = validate(tmp_path, BASE)
    assert r.returncode == 0 and "traces" in r.stdout
    r = run_cli("validate", "--config", str(ROOT / "config" / "default.yaml"))
    assert r.returncode == 0 and "valid" in r.stdout, r.stderr


def test_env_substitution_types_defaults_and_dollar_escape():
    doc = yaml.safe_load(BASE.replace("timeout: 1s", "timeout: ${env:T:-250ms}\n    send_batch_size: ${env:N}")
                         .replace("exporters:\n  debug:", "exporters:\n  file:\n    path: /tmp/$$HOME/${N}.jsonl"))
    doc["service"]["pipelines"]["traces"]["exporters"] = ["file"]
    cfg = parse_config(doc, REGISTRY, env={"N": "100"})
    assert cfg.processors["batch"].timeout == 0.25
    assert cfg.processors["batch"].send_batch_size == 100
    assert cfg.exporters["file"].path == "/tmp/$HOME/100.jsonl"


def test_several_pipelines_share_a_receiver_and_unused_components_are_not_built():
    doc = yaml.safe_load(BASE)
    doc["exporters"]["file"] = {"path": "/tmp/x.jsonl"}
    doc["exporters"]["duckdb/unused"] = {"path": "/tmp/never.duckdb"}
    doc["service"]["pipelines"]["traces/2"] = {"receivers": ["otlp"], "exporters": ["file", "debug"]}
    cfg = parse_config(doc, REGISTRY, env={})
    assert set(cfg.exporters) == {"debug", "file"}
    assert cfg.pipelines["traces/2"].exporters == ["file", "debug"]


def test_all_errors_are_reported_at_once():
    doc = yaml.safe_load(BASE.replace("timeout: 1s", "timeout: soon\n    bogus: 1"))
    with pytest.raises(ConfigError) as err:
        parse_config(doc, REGISTRY, env={})
    assert "processors::batch::timeout" in str(err.value) and "unknown key 'bogus'" in str(err.value)


def test_real_otelcol_config_loads_unchanged(tmp_path):
    # The shape otelcol's docs use: localhost endpoints, empty protocol sections, debug exporter keys.
    text = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: localhost:4317
        max_recv_msg_size_mib: 16
      http:
        endpoint: localhost:4318
processors:
  batch:
    send_batch_size: 10000
    send_batch_max_size: 11000
    timeout: 10s
exporters:
  debug:
    verbosity: detailed
    sampling_initial: 5
    sampling_thereafter: 200
  file:
    path: ./traces.json
    rotation:
      max_megabytes: 10
      max_backups: 3
service:
  telemetry:
    logs:
      level: debug
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug, file]
"""
    p = tmp_path / "otelcol.yaml"
    p.write_text(text)
    cfg = load_config(p, REGISTRY, env={})
    assert cfg.processors["batch"].timeout == 10.0
    assert cfg.receivers["otlp"].protocols.grpc.max_recv_msg_size_mib == 16


def test_run_refuses_to_start_on_a_bad_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(BASE.replace("timeout: 1s", "timout: 1s"))
    r = run_cli("run", "--config", str(p), timeout=30)
    assert r.returncode == 1 and "processors::batch: unknown key 'timout'" in r.stderr



def test_query_enabled_false_turns_the_query_api_off_and_an_empty_section_means_defaults(tmp_path):
    from spanpipe.exporters.duckdb import DuckDBExporter, DuckDBExporterConfig

    off = DuckDBExporterConfig.model_validate(yaml.safe_load(f"path: {tmp_path}/x.duckdb\nquery: {{enabled: false}}"))
    assert off.query.enabled is False and "query::auth::authenticator" not in off.extension_refs()
    exporter = DuckDBExporter("duckdb", off)
    exporter.start()
    try:
        assert exporter.query_server is None
    finally:
        exporter.shutdown()
    empty = DuckDBExporterConfig.model_validate(yaml.safe_load("path: /tmp/x.duckdb\nquery:\nsending_queue:\n"))
    assert empty.query.enabled and empty.query.endpoint == "127.0.0.1:4319"
    assert empty.sending_queue.queue_size == 2  # the duckdb exporter's own default, not the generic 1000
