"""Every component the registry finds honours its contract, in-process: its config validates,
it is created, started, fed each signal it declares, and shut down with what it held drained and
its self-metrics counted."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from collector import free_port, grpc_export
from componentkit import Host, Sink, create, log_records, log_request, registry, spans
from examples.fake_openai import FakeOpenAI
from otlp_requests import make_request
from spanpipe.telemetry import counters

REGISTRY = registry()
FACTORIES = sorted(REGISTRY.factories(), key=lambda f: (f.kind, f.type))


def sample_config(kind: str, type_: str, tmp: Path, ports: dict[str, int]) -> dict[str, Any]:
    """The smallest config of each built-in type that lets everything through."""
    return {
        ("receivers", "otlp"): {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{ports['grpc']}"},
                                              "http": {"endpoint": f"127.0.0.1:{ports['http']}"}}},
        ("receivers", "llm_gateway"): {"endpoint": f"127.0.0.1:{ports['gateway']}",
                                       "upstreams": [{"base_url": f"http://127.0.0.1:{ports['upstream']}/v1"}]},
        ("processors", "memory_limiter"): {"check_interval": "100ms", "limit_mib": 8000},
        ("processors", "batch"): {"timeout": "20ms"},
        ("processors", "probabilistic_sampler"): {"sampling_percentage": 100},
        ("processors", "tail_sampling"): {"decision_wait": "100ms", "check_interval": "50ms",
                                          "policies": [{"name": "all", "type": "always_sample"}]},
        ("processors", "attributes"): {"actions": [{"key": "k", "value": "v", "action": "upsert"}]},
        ("processors", "resource"): {"attributes": [{"key": "k", "value": "v", "action": "upsert"}]},
        ("processors", "redaction"): {"allow_all_keys": True},
        ("exporters", "duckdb"): {"path": str(tmp / "w.duckdb"), "query": {"enabled": False}},
        ("exporters", "parquet"): {"path": str(tmp / "lake")},
        ("exporters", "otlp"): {"endpoint": f"127.0.0.1:{ports['grpc']}", "tls": {"insecure": True},
                                "retry_on_failure": {"initial_interval": "50ms"}},
        ("exporters", "otlphttp"): {"endpoint": f"http://127.0.0.1:{ports['http']}",
                                    "retry_on_failure": {"initial_interval": "50ms"}},
        ("exporters", "file"): {"path": str(tmp / "out.json")},
        ("exporters", "loadbalancing"): {"resolver": {"static": {"hostnames": [f"127.0.0.1:{ports['grpc']}"]}},
                                         "protocol": {"otlp": {"tls": {"insecure": True},
                                                               "retry_on_failure": {"initial_interval": "50ms"}}}},
        ("extensions", "file_storage"): {"directory": str(tmp / "storage")},
        ("extensions", "health_check"): {"endpoint": f"127.0.0.1:{ports['health']}"},
        ("extensions", "bearertokenauth"): {"token": "s3cret"},
    }.get((kind, type_), {})


def build_config(factory, raw: dict[str, Any]):
    cfg = factory.config_class.model_validate(raw)
    cfg.validate_config()
    return cfg


@pytest.fixture
def ports() -> dict[str, int]:
    return {"grpc": free_port(), "http": free_port(), "health": free_port(), "gateway": free_port(),
            "upstream": free_port()}


def test_every_built_in_type_is_registered_through_entry_points():
    names = {kind: sorted(REGISTRY.types(kind)) for kind in ("receivers", "processors", "exporters", "extensions")}
    assert names["receivers"] == ["llm_gateway", "otlp"]
    assert set(names["processors"]) == {"memory_limiter", "batch", "probabilistic_sampler", "tail_sampling",
                                        "attributes", "resource", "filter", "redaction", "rollout", "reward"}
    assert set(names["exporters"]) >= {"duckdb", "parquet", "otlp", "otlp_grpc", "otlphttp", "otlp_http", "debug", "file",
                                       "loadbalancing"}
    assert names["extensions"] == ["bearertokenauth", "file_storage", "health_check"]


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f"{f.kind}/{f.type}")
def test_component_lifecycle(factory, tmp_path, ports):
    try:  # the default config: valid, or an error that names what is missing
        build_config(factory, {})
    except (ValueError, Exception) as exc:  # pydantic.ValidationError is a ValueError
        assert str(exc).strip(), "a config error says why"
    cfg = build_config(factory, sample_config(factory.kind, factory.type, tmp_path, ports))
    batch, ids = spans(6)
    {"receivers": check_receiver, "processors": check_processor,
     "exporters": check_exporter, "extensions": check_extension}[factory.kind](factory, cfg, batch, ids, tmp_path, ports)


def check_receiver(factory, cfg, batch, ids, tmp_path, ports) -> None:
    sink = Sink()
    receiver = create(factory, cfg, sink)
    with contextlib.ExitStack() as stack:
        if factory.type == "llm_gateway":
            stack.enter_context(FakeOpenAI(port=ports["upstream"]))
        receiver.start()
        try:
            sent = RECEIVER_TRAFFIC[factory.type](ports)
        finally:
            receiver.shutdown()  # hands what it holds to the pipeline
    assert len(sink.span_ids) == sent["spans"] and sink.log_records == sent["log_records"]
    if sent.get("span_ids"):
        assert sink.span_ids == sent["span_ids"]
    assert counters.value("receiver_accepted_spans", receiver=factory.type) >= sent["spans"]


def otlp_traffic(ports: dict[str, int]) -> dict[str, Any]:
    req, sent = make_request(4)
    assert grpc_export(f"127.0.0.1:{ports['grpc']}", req)[0] == "OK"
    r = requests.post(f"http://127.0.0.1:{ports['http']}/v1/logs", data=log_request(2).SerializeToString(),
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200
    return {"spans": 4, "span_ids": sent, "log_records": 2}


def gateway_traffic(ports: dict[str, int]) -> dict[str, Any]:
    for k in range(3):
        r = requests.post(f"http://127.0.0.1:{ports['gateway']}/v1/chat/completions", timeout=10,
                          json={"model": "m", "messages": [{"role": "user", "content": f"What is {k} + 1?"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    return {"spans": 3, "log_records": 0}


RECEIVER_TRAFFIC = {"otlp": otlp_traffic, "llm_gateway": gateway_traffic}


def check_processor(factory, cfg, batch, ids, tmp_path, ports) -> None:
    sink = Sink()
    proc = create(factory, cfg, sink)
    before = counters.value("processor_incoming_items", processor=factory.type)
    proc.start()
    try:
        if "traces" in factory.signals:
            proc.consume(batch)
        if "logs" in factory.signals:
            proc.consume_logs(log_records(3))
    finally:
        proc.shutdown()  # drains what it holds
    assert sorted(sink.span_ids) == sorted(ids)
    assert sink.columns - set(batch.extra) == set(factory.adds_columns), "a processor declares the columns it adds"
    assert sink.log_records == (3 if "logs" in factory.signals else 0)
    expected = len(ids) + (3 if "logs" in factory.signals else 0)
    assert counters.value("processor_incoming_items", processor=factory.type) - before == expected
    check_derivation(factory, cfg, batch, ids)


def check_derivation(factory, cfg, batch, ids) -> None:
    """A processor's per-span derivation travels to the decode workers (pickled, its key intact),
    gives there what it gives here, and a batch carrying its result goes through the processor."""
    import pickle

    from spanpipe.derived import bind, derived_value

    offered = create(factory, cfg, Sink()).derivation()
    if offered is None:
        return
    shipped = pickle.loads(pickle.dumps(offered))
    assert shipped.key == offered.key
    value = shipped.derive(batch)
    assert value == offered.derive(batch)
    carried = replace(batch)
    bind(carried, {offered.key: value})
    assert derived_value(carried, offered.key) is value
    sink = Sink()
    proc = create(factory, cfg, sink)
    proc.start()
    try:
        proc.consume(carried)
    finally:
        proc.shutdown()
    assert sorted(sink.span_ids) == sorted(ids)


def check_exporter(factory, cfg, batch, ids, tmp_path, ports) -> None:
    backend_sink, backend = Sink(), None
    if factory.type in ("otlp", "otlphttp", "loadbalancing"):  # a real OTLP receiver in-process to export to
        recv_factory = REGISTRY.get("receivers", "otlp")
        backend = create(recv_factory, build_config(recv_factory, sample_config("receivers", "otlp", tmp_path, ports)),
                         backend_sink)
        backend.start()
    exporter = create(factory, cfg, host=Host())
    sent_before = counters.value("exporter_sent_spans", exporter=factory.type)
    exporter.start()
    try:
        exporter.consume(batch)
        if "logs" in factory.signals:
            exporter.consume_logs(log_records(3))
    finally:
        exporter.shutdown()  # drains its queue
        if backend is not None:
            backend.shutdown()
    if factory.type == "loadbalancing":  # its backends are otlp exporters of their own, counted as such
        sent = counters.value("exporter_sent_spans", exporter=f"{factory.type}/127.0.0.1:{ports['grpc']}")
        assert sent - sent_before == len(ids) and sorted(backend_sink.span_ids) == sorted(ids)
        return
    assert counters.value("exporter_sent_spans", exporter=factory.type) - sent_before == len(ids)
    if backend is not None:
        assert sorted(backend_sink.span_ids) == sorted(ids) and backend_sink.log_records == 3


def check_extension(factory, cfg, batch, ids, tmp_path, ports) -> None:
    ext = create(factory, cfg, host=Host())
    ext.start()
    try:
        if factory.type == "health_check":
            assert requests.get(f"http://127.0.0.1:{ports['health']}/", timeout=5).status_code == 200
        if factory.type == "bearertokenauth":
            assert ext.authenticate("Bearer s3cret") and not ext.authenticate("Bearer nope")
        if factory.type == "file_storage":
            assert ext.directory_for("otlp/x").parent == tmp_path / "storage"
    finally:
        ext.shutdown()


def test_an_extension_used_as_what_it_is_not_is_a_config_error(tmp_path):
    from spanpipe.config import parse_config
    from spanpipe.errors import ConfigError
    doc = {"extensions": {"file_storage": {"directory": str(tmp_path)}, "bearertokenauth": {"token": "t"}},
           "receivers": {"otlp": {"protocols": {"grpc": {"auth": {"authenticator": "file_storage"}}}}},
           "exporters": {"duckdb": {"path": str(tmp_path / "w.duckdb"),
                                    "sending_queue": {"storage": "bearertokenauth"}}},
           "service": {"extensions": ["file_storage", "bearertokenauth"],
                       "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["duckdb"]}}}}
    with pytest.raises(ConfigError) as err:
        parse_config(doc, REGISTRY)
    text = str(err.value)
    assert "extension 'file_storage' is not an authenticator (a 'file_storage' extension provides: storage)" in text
    assert "receivers::otlp::" in text, text
    assert "exporters::duckdb::sending_queue::storage: extension 'bearertokenauth' is not a storage" in text, text


def test_a_processor_declares_only_columns_the_warehouse_has():
    from spanpipe.registry import Factory, Registry, RegistryError

    rollout = REGISTRY.get("processors", "rollout")
    adds_task = Factory("tasks", "processors", rollout.config_class, rollout.create, adds_columns=("task_id",))
    with pytest.raises(RegistryError, match="processor 'tasks' .* does not have: task_id"):
        Registry([adds_task], {id(adds_task): "package 'acme-tasks'"})
    exporter = Factory("x", "exporters", rollout.config_class, rollout.create, adds_columns=("rollout_id",))
    with pytest.raises(RegistryError, match="only processors add columns"):
        Registry([exporter])


def test_a_factory_creates_per_signal_and_its_signals_derive_from_its_creators(tmp_path):
    """otelcol's WithTraces/WithLogs: a processor may be a different thing per signal; the
    service makes each pipeline's instance with the creator of that pipeline's signal."""
    from spanpipe.component import BatchTransform
    from spanpipe.config import parse_config
    from spanpipe.registry import Factory, Registry, RegistryError
    from spanpipe.service import Service

    class SpanStamp(BatchTransform):
        def process(self, batch):
            return batch

    class LogStamp(SpanStamp):
        pass

    base = REGISTRY.get("processors", "batch")
    stamp = Factory("stamp", "processors", base.config_class,
                    traces=lambda cid, cfg, nxt: SpanStamp(cid, nxt), logs=lambda cid, cfg, nxt: LogStamp(cid, nxt))
    logs_only = Factory("logs_only", "processors", base.config_class, logs=lambda cid, cfg, nxt: LogStamp(cid, nxt))
    assert stamp.signals == ("traces", "logs") and logs_only.signals == ("logs",)
    registry = Registry([*REGISTRY.factories(), stamp, logs_only])
    doc = {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{free_port()}"}}}},
           "processors": {"stamp": {}, "logs_only": {}},
           "exporters": {"debug": {}},
           "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["stamp"], "exporters": ["debug"]},
                                     "logs": {"receivers": ["otlp"], "processors": ["stamp", "logs_only"],
                                              "exporters": ["debug"]}}}}
    service = Service(parse_config(doc, registry), registry)
    assert [[type(p) for p in chain] for chain in service.processors] == [[SpanStamp], [LogStamp, LogStamp]]
    doc["service"]["pipelines"]["traces"]["processors"] = ["logs_only"]
    with pytest.raises(Exception, match="does not support traces"):
        parse_config(doc, registry)
    two_receivers = Factory("twice", "receivers", base.config_class, traces=lambda *a: None, logs=lambda *a: None)
    with pytest.raises(RegistryError, match="one instance serving all its signals"):
        Registry([two_receivers])
