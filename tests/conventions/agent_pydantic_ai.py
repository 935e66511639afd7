"""A pydantic-ai agent with its own OpenTelemetry instrumentation (no Logfire), one run against the
fake OpenAI server; spans go to $OTEL_EXPORTER_OTLP_ENDPOINT (tests/conventions/capture.py)."""

import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
Agent.instrument_all()
model = OpenAIChatModel("fake-model", provider=OpenAIProvider(base_url=os.environ["FAKE_OPENAI_URL"], api_key="x"))
agent = Agent(model, name="math_agent", instructions="Answer exactly.")
result = agent.run_sync("What is 2 + 3?")
print(result.output)
provider.shutdown()
