"""A Strands agent (OpenAI model provider, streamed as Strands does) with Strands' own telemetry,
one invocation against the fake OpenAI server (tests/conventions/capture.py)."""

import os

from strands import Agent
from strands.models.openai import OpenAIModel
from strands.telemetry import StrandsTelemetry

telemetry = StrandsTelemetry().setup_otlp_exporter()
model = OpenAIModel(client_args={"api_key": "x", "base_url": os.environ["FAKE_OPENAI_URL"]}, model_id="fake-model")
agent = Agent(model=model, system_prompt="Answer exactly.", name="math_agent", callback_handler=None)
print(agent("What is 2 + 3?"))
telemetry.tracer_provider.shutdown()
