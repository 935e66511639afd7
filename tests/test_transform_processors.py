"""attributes, resource, filter and redaction processors: through a real collector and SDK client,
plus the condition language and config errors."""

from __future__ import annotations

import hashlib
import json

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from collector import Collector
from spanpipe.registry import Registry
from spanpipe.config import parse_config
from spanpipe.errors import ConfigError
from spanpipe.warehouse import Warehouse
from spanpipe.processors.ottl import ConditionError, SpanView, compile_condition

REGISTRY = Registry.from_entry_points()

CHAIN = {
    "resource": {"attributes": [
        {"key": "deployment.environment", "value": "rl-train", "action": "upsert"},
        {"key": "host.secret", "action": "delete"},
        {"key": "service.name", "value": "renamed-agent", "action": "update"},
    ]},
    "attributes": {
        "include": {"match_type": "regexp", "span_names": ["openai\\..*"]},
        "actions": [
            {"key": "user.email", "action": "hash"},
            {"key": "model.family", "from_attribute": "gen_ai.request.model", "action": "insert"},
            {"key": "gen_ai.request.model", "pattern": "^(?P<vendor>[a-z]+)-(?P<size>\\d+b)$", "action": "extract"},
            {"key": "tokens", "converted_type": "int", "action": "convert"},
            {"key": "debug.blob", "action": "delete"},
        ],
    },
    "filter": {"traces": {"span": [
        'name == "healthcheck"',
        'IsMatch(name, "^heartbeat") and kind == SPAN_KIND_INTERNAL',
        'attributes["drop.me"] == true',
        'resource.attributes["deployment.environment"] == "staging"',
        'status.code == STATUS_CODE_ERROR and attributes["retryable"] == nil',
    ]}},
    "redaction": {
        "allow_all_keys": True,
        "blocked_key_patterns": ["(?i)api[_.]?key"],
        "blocked_values": ["sk-[A-Za-z0-9]{20,}", "[\\w.+-]+@[\\w-]+\\.[\\w.]+"],
        "summary": "debug",
    },
    "batch": {"timeout": "20ms"},
}


def test_transform_chain_through_a_real_collector(tmp_path):
    with Collector(tmp_path, processors=CHAIN) as c:
        tp = TracerProvider(resource=Resource.create({"service.name": "agent", "host.secret": "s3cr3t"}))
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{c.http_url}/v1/traces"),
                                                 schedule_delay_millis=20))
        t = tp.get_tracer("x")
        with t.start_as_current_span("openai.chat", attributes={
                "user.email": "ada@example.com", "gen_ai.request.model": "qwen-7b", "tokens": "42",
                "debug.blob": "x" * 100, "openai.api_key": "sk-abc", "prompt": "my key is sk-ABCDEFGHIJKLMNOPQRSTUVWX ok"}):
            pass
        with t.start_as_current_span("tool.run", attributes={"user.email": "bob@example.com", "tokens": "7"}):
            pass
        for name, kind, attrs in [("healthcheck", SpanKind.SERVER, {}), ("heartbeat-1", SpanKind.INTERNAL, {}),
                                  ("heartbeat-2", SpanKind.CLIENT, {}), ("marked", SpanKind.INTERNAL, {"drop.me": True})]:
            with t.start_as_current_span(name, kind=kind, attributes=attrs):
                pass
        with t.start_as_current_span("failed") as s:
            s.set_status(Status(StatusCode.ERROR))
        with t.start_as_current_span("failed-retryable", attributes={"retryable": True}) as s:
            s.set_status(Status(StatusCode.ERROR))
        tp.shutdown()
        assert c.stop() == 0
    with Warehouse.open(c.db) as wh:
        rows = {r["name"]: r for r in wh.sql("SELECT * FROM spans").to_pylist()}
    assert set(rows) == {"openai.chat", "tool.run", "heartbeat-2", "failed-retryable"}
    llm = json.loads(rows["openai.chat"]["attributes"])
    assert llm["user.email"] == hashlib.sha256(b"ada@example.com").hexdigest()
    assert llm["model.family"] == "qwen-7b" and llm["vendor"] == "qwen" and llm["size"] == "7b"
    assert llm["tokens"] == 42 and "debug.blob" not in llm
    assert llm["openai.api_key"] == "****"
    assert llm["prompt"] == "my key is **** ok"
    assert llm["redaction.masked.keys"] == "openai.api_key,prompt" and llm["redaction.masked.count"] == 2
    tool = json.loads(rows["tool.run"]["attributes"])
    assert tool["user.email"] == "****", "not in include: not hashed, but the email is masked by redaction"
    assert tool["tokens"] == "7", "not in include: not converted"
    res = json.loads(rows["tool.run"]["resource_attributes"])
    assert res["deployment.environment"] == "rl-train" and "host.secret" not in res
    assert rows["tool.run"]["service_name"] == "renamed-agent"


def view(**kw) -> SpanView:
    base = dict(name="n", kind=1, status_code=0, status_message="", trace_id="t" * 32, span_id="s" * 16,
                parent_span_id=None, trace_state="", start=10, end=25, attributes={}, resource={},
                scope_name="sc", scope_version="1")
    return SpanView(**{**base, **kw})


@pytest.mark.parametrize("cond, span, expected", [
    ('name == "n"', {}, True),
    ('name != "n"', {}, False),
    ('attributes["x"] == nil', {}, True),
    ('attributes["x"] > 3', {"attributes": {"x": 5}}, True),
    ('attributes["x"] > 3', {"attributes": {"x": "5"}}, False),
    ('attributes["x"] == 5', {"attributes": {"x": 5.0}}, True),
    ('not (kind == SPAN_KIND_SERVER) and duration_ns >= 15', {}, True),
    ('kind == SPAN_KIND_INTERNAL or false', {}, True),
    ('IsMatch(resource.attributes["service.name"], "^agent-")', {"resource": {"service.name": "agent-7"}}, True),
    ('IsMatch(attributes["missing"], ".*")', {}, False),
    ('IsString(attributes["x"]) and IsInt(attributes["y"])', {"attributes": {"x": "a", "y": True}}, False),
    ('instrumentation_scope.name == "sc" and status.code == STATUS_CODE_UNSET', {}, True),
])
def test_condition_language(cond, span, expected):
    assert compile_condition(cond)(view(**span)) is expected


@pytest.mark.parametrize("cond", ['name = "x"', 'foo == 1', 'attributes[x] == 1', 'Lower(name) == "a"',
                                  'name == "x" && kind == 1', '__import__("os")'])
def test_bad_conditions_are_refused(cond):
    with pytest.raises(ConditionError):
        compile_condition(cond)


@pytest.mark.parametrize("processor, cfg, message", [
    ("filter", {"traces": {"span": ['name = "x"']}}, "processors::filter: traces::span::0"),
    ("attributes", {"actions": [{"key": "a", "action": "insert"}]}, "needs exactly one of 'value' or 'from_attribute'"),
    ("attributes", {"actions": [{"key": "a", "action": "explode"}]}, "processors::attributes::actions::0::action"),
    ("attributes", {"actions": [{"key": "a", "action": "extract", "pattern": "(no-names)"}]}, "needs named groups"),
    ("redaction", {"blocked_values": ["("]}, "blocked_values::0: invalid regex"),
    ("attributes", {"actions": [{"key": "a", "action": "delete"}], "include": {"span_kinds": ["SPAN_KIND_BOGUS"]}},
     "include::span_kinds: unknown kind"),
])
def test_processor_config_errors_name_the_path(processor, cfg, message):
    doc = {"receivers": {"otlp": {"protocols": {"grpc": None}}}, "processors": {processor: cfg},
           "exporters": {"debug": None},
           "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": [processor], "exporters": ["debug"]}}}}
    with pytest.raises(ConfigError) as err:
        parse_config(doc, REGISTRY, env={})
    assert message in str(err.value)


@pytest.mark.parametrize("pattern, literal", [
    (r"sk-[A-Za-z0-9_-]{16,}", "sk-"), (r"[\w.+-]+@[\w-]+\.[\w.]+", "@"), (r"(a|b)c", "c"),
    (r"(?i)secret", None), (r"x?", None),
])
def test_redaction_prefilter_literal_is_one_every_match_contains(pattern, literal):
    from spanpipe.processors.redaction import required_literal
    assert required_literal(pattern) == literal


def test_redaction_allowed_values_and_nested_values():
    from spanpipe.processors.redaction import RedactionConfig, RedactionProcessor
    p = RedactionProcessor("redaction", RedactionConfig(allow_all_keys=True, blocked_values=[r"\d{4}-\d{4}"],
                                                        allowed_values=[r"0000-0000"], summary="silent"), None)
    out, redacted, masked = p.redact({"a": "card 1234-5678", "b": "0000-0000", "c": ["x 9999-9999"], "d": {"e": "1111-2222"}})
    assert out == {"a": "card ****", "b": "0000-0000", "c": ["x ****"], "d": {"e": "****"}}
    assert (redacted, masked) == (0, 3)
