"""An agent traced by AgentOps (its own OpenAI instrumentation and span exporter), one call against
the fake OpenAI server. AgentOps' exporter is pointed at $OTEL_EXPORTER_OTLP_ENDPOINT; its API (for
a JWT) is the same local recorder, which answers nothing useful, so no data leaves the machine."""

import os

import agentops
import openai

endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
agentops.init(api_key="00000000-0000-4000-8000-000000000000", endpoint=endpoint,
              exporter_endpoint=f"{endpoint}/v1/traces", auto_start_session=False, instrument_llm_calls=True,
              default_tags=["spanpipe-capture"])
trace = agentops.start_trace("math_agent")
# AgentOps builds its own resource (OTEL_RESOURCE_ATTRIBUTES is not read): the rollout id goes on
# its trace's root span, as the README's rule for any agent allows.
trace.span.set_attribute("agentlightning.rollout_id", "ro-agentops")
client = openai.OpenAI(base_url=os.environ["FAKE_OPENAI_URL"], api_key="x")
reply = client.chat.completions.create(model="fake-model", temperature=0.0, messages=[
    {"role": "system", "content": "Answer exactly."}, {"role": "user", "content": "What is 2 + 3?"}])
print(reply.choices[0].message.content)
agentops.end_trace(trace, "Success")
from opentelemetry import trace as otel_trace  # noqa: E402

provider = otel_trace.get_tracer_provider()
if hasattr(provider, "force_flush"):
    provider.force_flush()
