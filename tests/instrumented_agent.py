"""An agent instrumented by a real OpenAI instrumentation library (run as a subprocess by tests):
`python tests/instrumented_agent.py KIND BASE_URL ROLLOUT_ID [PROPAGATE]`.

PROPAGATE sends the W3C `traceparent` and `baggage` headers with each call, as an agent does that
talks to the llm_gateway receiver: `beside` injects them before the call (the agent's span is
current, so the gateway's span is a sibling of the instrumentation's LLM span), `under` injects them
as the HTTP request is sent (the instrumentation's LLM span is current: the gateway's span is its
child). Current openai releases send through httpx2, which no HTTP instrumentation sees, so both
are done by hand here.
"""

from __future__ import annotations

import sys

import openai
from opentelemetry.propagate import inject

from spanpipe import emit

INSTRUMENTORS = {
    "openinference": "openinference.instrumentation.openai",
    "openai-v2": "opentelemetry.instrumentation.openai_v2",
    "openllmetry": "opentelemetry.instrumentation.openai",
}


def main() -> None:
    kind, base_url, rollout_id = sys.argv[1:4]
    propagate = sys.argv[4] if len(sys.argv) > 4 else None
    emit.configure(service_name=f"agent-{kind}")
    logs = _log_provider() if kind == "openai-v2" else None  # openai-v2 sends message content as logs
    module = __import__(INSTRUMENTORS[kind], fromlist=["OpenAIInstrumentor"])
    module.OpenAIInstrumentor().instrument()
    http_client = None
    if propagate == "under":
        http_client = openai.DefaultHttpxClient(event_hooks={"request": [lambda request: inject(request.headers)]})
    client = openai.OpenAI(base_url=base_url, api_key="not-needed", http_client=http_client)
    with emit.rollout(rollout_id=rollout_id):
        headers: dict[str, str] = {}
        if propagate == "beside":
            inject(headers)
        reply = client.chat.completions.create(
            model="fake-model", temperature=0.0, extra_headers=headers or None,
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
