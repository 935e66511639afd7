"""MessagesAdapter: OpenAI chat fine-tuning records (`{"messages": [...], "tools": [...]}`), one per
LLM call that the TripletAdapter would keep (same options, same decisions).

`messages` is the call's prompt then its (first) answer when it has one, in OpenAI chat shape,
whatever instrumentation recorded it. When the answer carries no tool calls but the call has child `tool.*` spans (how
several agent frameworks record the tools an answer invoked), those become the assistant's
`tool_calls` (`tool.name`, `tool.parameters`, `tool.call.id`). `tools` are the function definitions
the request offered: OpenLLMetry `gen_ai.request.functions.<i>.*`, OpenInference
`llm.tools.<i>.tool.json_schema`, or a `gen_ai.tool.definitions` / `gen_ai.request.tools` JSON list.
"""

from __future__ import annotations

from typing import Any, Iterable

import orjson

from spanpipe.adapters.agl_payload import openai_style
from spanpipe.adapters.triplets import TripletAdapter
from spanpipe.semconv.llm_call import llm_call
from spanpipe.semconv.values import indexed, loose
from spanpipe.warehouse.source import SqlSource
from spanpipe.warehouse.views import events_with_logs_sql, llm_attributes_sql, sql_string


def _function(fn: dict[str, Any]) -> dict[str, Any]:
    params = loose(fn.get("parameters"))
    return {"type": "function", "function": {"name": fn.get("name"), "description": fn.get("description", ""),
                                             "parameters": params if isinstance(params, dict) else {}}}


def tool_definitions(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    functions = indexed(attrs, "gen_ai.request.functions")
    if functions:
        return [_function(f) for f in functions]
    schemas = [loose(t.get("tool.json_schema")) for t in indexed(attrs, "llm.tools")]
    schemas = [s for s in schemas if isinstance(s, dict)]
    if schemas:
        return [s if "function" in s else {"type": "function", "function": s} for s in schemas]
    for key in ("gen_ai.tool.definitions", "gen_ai.request.tools"):
        listed = loose(attrs.get(key))
        if isinstance(listed, list) and listed:
            return [t if isinstance(t, dict) and "function" in t else _function(t) for t in listed
                    if isinstance(t, dict)]
    return None


def _tool_call(span_id: str, name: str, attrs: dict[str, Any]) -> dict[str, Any]:
    args = attrs.get("tool.parameters", attrs.get("tool.arguments", "{}"))
    return {"id": attrs.get("tool.call.id", span_id), "type": "function",
            "function": {"name": attrs.get("tool.name", name.removeprefix("tool.")),
                         "arguments": args if isinstance(args, str) else orjson.dumps(args).decode()}}


def record(attrs: dict[str, Any], events: list[dict[str, Any]] | None,
           child_tools: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    call = llm_call(attrs, events)
    messages = openai_style(call["input_messages"]) or []
    for m in messages:
        m.pop("finish_reason", None)
    answers = openai_style(call["output_messages"])
    if answers:
        answer = {k: v for k, v in answers[0].items() if k in ("role", "content", "tool_calls")}
        if not answer.get("tool_calls") and child_tools:
            answer["tool_calls"] = [_tool_call(sid, name, a) for sid, name, a in child_tools]
        messages.append(answer)
    return {"messages": messages, "tools": tool_definitions(attrs)}


class Messages(list):
    """Message records with `.reasons` and `.cursor`, as `Triplets` has."""

    def __init__(self, reasons: dict[str, str], cursor: int | None) -> None:
        super().__init__()
        self.reasons, self.cursor = reasons, cursor


class MessagesAdapter:
    def __init__(self, warehouse: SqlSource, **triplet_options: Any) -> None:
        self.warehouse = warehouse
        self.triplets = TripletAdapter(warehouse, **triplet_options)

    def messages(self, rollout_ids: Iterable[str] | None = None, since: int | None = None,
                 mode: str | None = None) -> Messages:
        """Records `{"messages", "tools", "rollout_id", "span_id", "reward"}`, in call order; `.reasons`
        and `.cursor` as for triplets."""
        chosen = self.triplets.triplets(rollout_ids, since=since, mode=mode)
        out = Messages(chosen.reasons, chosen.cursor)
        if not chosen:
            return out
        rids = ", ".join(sql_string(r) for r in {t.rollout_id for t in chosen})
        sids = ", ".join(sql_string(t.span_id) for t in chosen)
        spans = {(r["trace_id"], r["span_id"]): r for r in self.warehouse.sql(
            f"SELECT trace_id, span_id, {llm_attributes_sql('s')} AS attributes, {events_with_logs_sql('s')} AS events "
            f"FROM spans s WHERE rollout_id IN ({rids}) AND span_id IN ({sids})").to_pylist()}
        tools: dict[tuple[str, str], list[tuple[str, str, dict[str, Any]]]] = {}
        for r in self.warehouse.sql(
                f"SELECT trace_id, parent_span_id, span_id, name, attributes::VARCHAR AS attributes FROM spans "
                f"WHERE rollout_id IN ({rids}) AND parent_span_id IN ({sids}) AND name LIKE 'tool.%' "
                "ORDER BY start_time_unix_nano").to_pylist():
            tools.setdefault((r["trace_id"], r["parent_span_id"]), []).append(
                (r["span_id"], r["name"], orjson.loads(r["attributes"])))
        for t in chosen:
            row = spans[(t.trace_id, t.span_id)]
            events = orjson.loads(row["events"]) if row["events"] else None
            rec = record(orjson.loads(row["attributes"]), events, tools.get((t.trace_id, t.span_id), []))
            out.append({**rec, "rollout_id": t.rollout_id, "span_id": t.span_id, "reward": t.reward})
        return out
