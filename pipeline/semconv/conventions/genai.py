"""OpenTelemetry GenAI semantic conventions: the latest (`gen_ai.operation.name`,
`gen_ai.provider.name`, `gen_ai.input.messages` / `gen_ai.output.messages`, the
`gen_ai.client.inference.operation.details` event), the earlier per-message events
(`gen_ai.user.message`, `gen_ai.choice`, ...) and legacy attribute names (`gen_ai.system`,
`gen_ai.usage.prompt_tokens`). Rewards: `gen_ai.evaluation.result` events."""

from __future__ import annotations

from spanpipe.semconv.convention import (AgentRule, Attrs, Convention, Dimension, Events, Field, KindRule, Malformed,
                                         Message, MessagesReader, RewardRule, reward_number)
from spanpipe.semconv.messages import canonical_list, from_openai, parts_from_content
from spanpipe.semconv.values import loose

LLM_OPERATIONS = {"chat", "text_completion", "generate_content"}
OPERATION_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
INPUT_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
EVALUATION_EVENT = "gen_ai.evaluation.result"
EVALUATION_SOURCE = "gen_ai.evaluation"


def _tool_or_agent_operation(name: str, attrs: Attrs) -> str | None:
    op = attrs.get("gen_ai.operation.name")
    return "tool" if op == "execute_tool" else "agent" if op in ("invoke_agent", "create_agent") else None


def _llm_operation(name: str, attrs: Attrs) -> str | None:
    return "llm" if attrs.get("gen_ai.operation.name") in LLM_OPERATIONS else None


def _tool_by_name(name: str, attrs: Attrs) -> str | None:
    return "tool" if name.startswith(("tool.", "execute_tool")) else None


def _agent_by_name(name: str, attrs: Attrs) -> str | None:
    return "agent" if name.startswith("invoke_agent") else None


def _input_messages(attrs: Attrs) -> list[Message] | None:
    msgs = canonical_list(attrs.get("gen_ai.input.messages"), "user")
    if msgs is not None:
        system = loose(attrs.get("gen_ai.system_instructions"))
        if system:
            msgs = [{"role": "system", "parts": parts_from_content(system)}, *msgs]
    return msgs


def _operation_details(events: Events) -> Attrs:
    """The attributes of the call's operation-details event: where the latest conventions put message
    content when it is not on the span (as structured values or JSON strings)."""
    for ev in events or ():
        if ev.get("name") == OPERATION_DETAILS_EVENT:
            return ev.get("attributes") or {}
    return {}


def _event_inputs(attrs: Attrs, events: Events) -> list[Message] | None:
    out = []
    for ev in events or ():
        role = INPUT_EVENTS.get(ev.get("name"))
        if role is not None:
            a = ev.get("attributes") or {}
            out.append(from_openai({"role": a.get("role") or role, "content": a.get("content"),
                                    "tool_calls": a.get("tool_calls"), "tool_call_id": a.get("id")}))
    return out or None


def _event_outputs(attrs: Attrs, events: Events) -> list[Message] | None:
    out = []
    for ev in events or ():
        if ev.get("name") == "gen_ai.choice":
            a = ev.get("attributes") or {}
            message = loose(a.get("message")) or {}
            if not isinstance(message, dict):
                message = {"content": message}
            out.append(from_openai({"role": message.get("role") or "assistant", **message,
                                    "finish_reason": a.get("finish_reason")}, "assistant"))
    return out or None


def _evaluations(name: str, attrs: Attrs, events: Events) -> list[Dimension]:
    out = []
    for ev in events or ():
        if ev.get("name") != EVALUATION_EVENT:
            continue
        a = ev.get("attributes") or {}
        if "gen_ai.evaluation.score.value" not in a:
            raise Malformed("gen_ai.evaluation.result event without gen_ai.evaluation.score.value")
        out.append({"name": a.get("gen_ai.evaluation.name") or "evaluation",
                    "value": reward_number(a["gen_ai.evaluation.score.value"], "gen_ai.evaluation.score.value"),
                    "source": EVALUATION_SOURCE})
    return out


CONVENTION = Convention(
    name="gen_ai",
    title="OTel GenAI",
    kinds=(KindRule(25, _tool_or_agent_operation), KindRule(60, _llm_operation),
           KindRule(80, _tool_by_name), KindRule(85, _agent_by_name)),
    agents=(AgentRule(80, "gen_ai.agent.name"),),
    messages=(
        MessagesReader(10, "gen_ai", "OTel GenAI / OpenLLMetry", lambda a, e: _input_messages(a),
                       lambda a, e: canonical_list(a.get("gen_ai.output.messages"), "assistant")),
        MessagesReader(20, "gen_ai_events", "OTel GenAI (events)", lambda a, e: _input_messages(_operation_details(e)),
                       lambda a, e: canonical_list(_operation_details(e).get("gen_ai.output.messages"), "assistant")),
        MessagesReader(50, "gen_ai_events", "OTel GenAI (events)", _event_inputs, _event_outputs),
    ),
    provider=(Field("gen_ai.provider.name"), Field("gen_ai.system")),
    request_model=(Field("gen_ai.request.model"),),
    response_model=(Field("gen_ai.response.model"),),
    response_id=(Field("gen_ai.response.id"),),
    input_tokens=("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    output_tokens=("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    rewards=RewardRule(30, lambda name, attrs, events: bool(events), _evaluations),
)
