"""agent_genai_latest.py with message content on the `gen_ai.client.inference.operation.details`
event only (none on the span): the other place the latest GenAI conventions put it."""

import os
import runpy
from pathlib import Path

os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "EVENT_ONLY"
runpy.run_path(str(Path(__file__).with_name("agent_genai_latest.py")), run_name="__main__")
