"""An agent instrumented by the real Logfire (its OpenAI instrumentation), run as a subprocess by
tests: `python tests/logfire_agent.py OTLP_HTTP_URL BASE_URL ROLLOUT_ID`. Logfire sends to our
collector only (send_to_logfire=False + an OTLP exporter). One plain call, one streamed call."""

from __future__ import annotations

import sys

import logfire
import openai
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def main() -> None:
    otlp, base_url, rollout_id = sys.argv[1:4]
    logfire.configure(send_to_logfire=False, console=False, service_name="logfire-agent",
                      additional_span_processors=[BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp}/v1/traces"))])
    client = openai.OpenAI(base_url=base_url, api_key="not-needed")
    logfire.instrument_openai(client)
    with logfire.span("agent run", **{"agentlightning.rollout_id": rollout_id}):
        plain = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "What is 2 + 3?"}])
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "What is 4 + 4?"}], stream=True) if c.choices)
    logfire.force_flush()
    print(plain.choices[0].message.content)
    print(streamed)


if __name__ == "__main__":
    main()
