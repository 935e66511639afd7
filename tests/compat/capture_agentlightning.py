"""Run the emit case table against agentlightning 0.3.0 and print the results as JSON
(`make compat` writes them to tests/fixtures/emit_attributes.json when asked to refresh)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import agentlightning as agl  # noqa: E402
from agentlightning.tracer.base import set_active_tracer  # noqa: E402
from agentlightning.tracer.otel import OtelTracer  # noqa: E402
from agentlightning.utils.otel import make_link_attributes, make_tag_attributes  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from tests.emit_cases import capture  # noqa: E402


class AglApi:
    emit_reward = staticmethod(agl.emit_reward)
    emit_annotation = staticmethod(agl.emit_annotation)
    emit_message = staticmethod(agl.emit_message)
    emit_object = staticmethod(agl.emit_object)
    emit_exception = staticmethod(agl.emit_exception)
    operation = staticmethod(agl.operation)
    make_link_attributes = staticmethod(make_link_attributes)
    make_tag_attributes = staticmethod(make_tag_attributes)


def main() -> None:
    tracer = OtelTracer()
    tracer.init_worker(0)
    set_active_tracer(tracer)
    memory = InMemorySpanExporter()
    tracer._tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    print(json.dumps(capture(AglApi, memory.get_finished_spans, memory.clear), indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
