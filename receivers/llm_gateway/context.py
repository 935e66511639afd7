"""Where a proxied call belongs: its rollout and attempt, and the caller's trace.

Rollout/attempt ids, first hit wins: the Agent Lightning 0.3 LLM-proxy path form
`/rollout/{rollout_id}/attempt/{attempt_id}/v1/...`, the W3C `baggage` header
(`agentlightning.rollout_id`, `agentlightning.attempt_id`: what `spanpipe.emit.rollout` puts in
baggage), the `x-rollout-id` / `x-attempt-id` headers; the task id (GRPO groups) from baggage
`spanpipe.task_id` or `x-task-id`. A valid W3C `traceparent` makes the
gateway's span a child of the caller's span; without one the call starts a trace of its own.
Header values are parsed by splitting, never by a regex.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import unquote

from spanpipe.emit.setup import ATTEMPT_ID as ATTEMPT_KEY, ROLLOUT_ID as ROLLOUT_KEY, TASK_ID as TASK_KEY

_HEX = frozenset("0123456789abcdef")
MAX_HEADER = 8192


@dataclass(frozen=True)
class CallContext:
    trace_id: str
    parent_span_id: str | None
    rollout_id: str | None
    attempt_id: str | None
    task_id: str | None = None


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a version-00-compatible traceparent, or None if invalid."""
    if not value or len(value) > 512:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    version, trace_id, span_id, flags = parts[0], parts[1].lower(), parts[2].lower(), parts[3]
    if (len(trace_id) != 32 or len(span_id) != 16 or len(flags) != 2 or not set(trace_id + span_id + version.lower()) <= _HEX
            or trace_id == "0" * 32 or span_id == "0" * 16 or (version == "00" and len(parts) != 4)):
        return None
    return trace_id, span_id


def parse_baggage(value: str | None) -> dict[str, str]:
    """W3C baggage `k=v;props,k2=v2` → {k: v}, values percent-decoded; bad members skipped."""
    out: dict[str, str] = {}
    if not value or len(value) > MAX_HEADER:
        return out
    for member in value.split(","):
        kv = member.split(";", 1)[0]
        key, sep, val = kv.partition("=")
        if sep and key.strip():
            out[key.strip()] = unquote(val.strip())
    return out


def path_ids(rollout_id: str | None, attempt_id: str | None) -> tuple[str | None, str | None]:
    return (unquote(rollout_id) if rollout_id else None, unquote(attempt_id) if attempt_id else None)


def call_context(headers: Mapping[str, str], path_rollout: str | None = None,
                 path_attempt: str | None = None) -> CallContext:
    rollout, attempt = path_ids(path_rollout, path_attempt)
    bag = parse_baggage(headers.get("baggage"))
    if rollout is None:
        rollout = bag.get(ROLLOUT_KEY) or headers.get("x-rollout-id") or None
        attempt = bag.get(ATTEMPT_KEY) or headers.get("x-attempt-id") or None
    task = bag.get(TASK_KEY) or headers.get("x-task-id") or None
    parent = parse_traceparent(headers.get("traceparent"))
    if parent is None:
        return CallContext(os.urandom(16).hex(), None, rollout, attempt, task)
    return CallContext(parent[0], parent[1], rollout, attempt, task)
