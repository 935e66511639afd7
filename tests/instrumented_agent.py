"""An agent instrumented by a real OpenAI instrumentation library (run as a subprocess by tests):
`python tests/instrumented_agent.py KIND BASE_URL ROLLOUT_ID`."""

from __future__ import annotations

import sys

import openai

from spanpipe import emit

INSTRUMENTORS = {
    "openinference": "openinference.instrumentation.openai",
    "openai-v2": "opentelemetry.instrumentation.openai_v2",
    "openllmetry": "opentelemetry.instrumentation.openai",
}


def main() -> None:
    kind, base_url, rollout_id = sys.argv[1:4]
    emit.configure(service_name=f"agent-{kind}")
    logs = _log_provider() if kind == "openai-v2" else None  # openai-v2 sends message content as logs
    module = __import__(INSTRUMENTORS[kind], fromlist=["OpenAIInstrumentor"])
    module.OpenAIInstrumentor().instrument()
    client = openai.OpenAI(base_url=base_url, api_key="not-needed")
    with emit.rollout(rollout_id=rollout_id):
        reply = client.chat.completions.create(
            model="fake-model", temperature=0.0,
            messages=[{"role": "system", "content": "Answer exactly."}, {"role": "user", "content": "What is 2 + 3?"}])
        emit.emit_reward(1.0 if "5" in (reply.choices[0].message.content or "") else 0.0)
    emit.shutdown()
    if logs is not None:
        logs.shutdown()
    print(reply.id)


def _log_provider():
    """OTLP log export to $OTEL_EXPORTER_OTLP_ENDPOINT, as the OTel SDK's auto-configuration sets it up."""
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(insecure=True)))
    set_logger_provider(provider)
    return provider


if __name__ == "__main__":
    main()
