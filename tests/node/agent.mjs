// A Node agent instrumented with the OpenTelemetry SDK only (no spanpipe helper): one rollout per
// run, named by attributes any language can set. Usage: node agent.mjs OTLP_HTTP_URL ROLLOUT_ID [fail]
import { NodeSDK } from "@opentelemetry/sdk-node";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { trace, SpanStatusCode } from "@opentelemetry/api";

const [url, rolloutId, fail] = process.argv.slice(2);
const sdk = new NodeSDK({ serviceName: "node-agent", traceExporter: new OTLPTraceExporter({ url: `${url}/v1/traces` }) });
sdk.start();
const tracer = trace.getTracer("node-agent");
const ids = { "agentlightning.rollout_id": rolloutId, "agentlightning.attempt_id": "at-node" };
await tracer.startActiveSpan("invoke_agent solver", { attributes: { ...ids, "gen_ai.operation.name": "invoke_agent",
                                                               "gen_ai.agent.name": "solver" } }, async (root) => {
  const call = tracer.startSpan("chat qwen", { attributes: {
    ...ids, "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "qwen",
    "gen_ai.response.id": `resp-${rolloutId}`,
    "gen_ai.input.messages": JSON.stringify([{ role: "user", parts: [{ type: "text", content: "What is 2 + 3?" }] }]),
    "gen_ai.output.messages": JSON.stringify([{ role: "assistant", parts: [{ type: "text", content: "5" }],
                                                 finish_reason: "stop" }]),
    "prompt_token_ids": [1, 2, 3], "response_token_ids": [4, 5] } });
  call.end();
  // The JS SDK stamps span starts to the millisecond: a reward started in the same millisecond as
  // the call ended would look concurrent with it. Scoring takes time in a real agent anyway.
  await new Promise((resolve) => setTimeout(resolve, 5));
  const reward = tracer.startSpan("agentlightning.annotation", { attributes: {
    ...ids, "agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": fail ? 0.0 : 1.0 } });
  reward.end();
  if (fail) root.setStatus({ code: SpanStatusCode.ERROR, message: "the task failed" });
  root.end();
});
await sdk.shutdown();
