"""One rollout attempt's spans column-wise, as the triplet algorithm walks them, and the conversion
from hand-built or exported span dicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from spanpipe.semconv.agents import agent_name

if TYPE_CHECKING:
    from spanpipe.adapters.triplets import TripletAdapter


@dataclass
class SpanColumns:
    """One rollout attempt's spans, column-wise, in warehouse order (sequence id, start time)."""

    span_id: list[str]
    parent_span_id: list[str | None]
    name: list[str]
    start: list[int]
    end: list[int]
    span_type: list[str | None]
    reward: list[float | None]
    agent_name: list[str | None]
    response_id: list[str | None]
    reward_operation: list[bool]
    attributes: list[str | None]  # JSON text, only for LLM call candidates
    events: list[str | None]
    trace_id: list[str] = field(default_factory=list)
    sequence_id: list[int | None] = field(default_factory=list)
    # From the warehouse: which spans are LLM-call candidates (candidate_sql, which also leaves out
    # client-side twins of gateway spans); None: decided here from name and span_type.
    candidate: list[bool] | None = None


def spans_to_columns(spans: list[dict[str, Any]], adapter: TripletAdapter) -> SpanColumns:
    """Hand-built or exported span dicts → columns, classifying them as the collector would."""
    from spanpipe.semconv.rewards import SpanReader

    reader = SpanReader()

    def attrs_of(sp: dict[str, Any]) -> dict[str, Any]:
        a = sp.get("attributes") or {}
        return orjson.loads(a) if isinstance(a, (str, bytes)) else dict(a)

    cols = SpanColumns([], [], [], [], [], [], [], [], [], [], [], [], [], [])
    for sp in spans:
        attrs = attrs_of(sp)
        name = sp.get("name") or ""
        events = sp.get("events")
        read = reader.read(name, attrs, orjson.loads(events) if isinstance(events, (str, bytes)) else events)
        kind, reward, rid = read.span_type, read.reward, read.response_id
        agent = agent_name(name, attrs)
        cols.span_id.append(sp["span_id"])
        cols.parent_span_id.append(sp.get("parent_span_id", sp.get("parent_id")))
        cols.name.append(name)
        cols.start.append(sp.get("start_time_unix_nano", sp.get("start_time")))
        cols.end.append(sp.get("end_time_unix_nano", sp.get("end_time")))
        cols.span_type.append(kind)
        cols.reward.append(reward)
        cols.agent_name.append(agent)
        cols.response_id.append(rid)
        cols.reward_operation.append(name == "agentlightning.operation"
                                     and attrs.get("agentlightning.operation.name") == "agentlightning.reward")
        cols.attributes.append(orjson.dumps(attrs).decode())
        cols.events.append(orjson.dumps(sp.get("events") or []).decode())
        cols.trace_id.append(sp.get("trace_id"))
        cols.sequence_id.append(sp.get("sequence_id"))
    return cols
