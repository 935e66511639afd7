"""The OTel GenAI instrumentation of openai (openai-v2 with opentelemetry-util-genai) in the latest
experimental semantic conventions: message content on the span as JSON attributes and on the
`gen_ai.client.inference.operation.details` event (tests/conventions/capture.py sets the mode)."""

import os

os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_AND_EVENT")

import openai  # noqa: E402
from opentelemetry import _logs, trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider  # noqa: E402
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
logs = LoggerProvider()
logs.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
_logs.set_logger_provider(logs)
OpenAIInstrumentor().instrument()
client = openai.OpenAI(base_url=os.environ["FAKE_OPENAI_URL"], api_key="x")
reply = client.chat.completions.create(model="fake-model", temperature=0.0, messages=[
    {"role": "system", "content": "Answer exactly."}, {"role": "user", "content": "What is 2 + 3?"}])
print(reply.choices[0].message.content)
provider.shutdown()
logs.shutdown()
