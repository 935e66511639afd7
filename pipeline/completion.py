"""The `agentlightning.rollout` span spanpipe sends itself when it completes a rollout for the agent
(after `idle_timeout`, or on `POST /v1/rollouts/{id}/complete`): the one rule that makes a rollout
complete everywhere — warehouse, completion events, cursors, lake — is that its rollout span is
stored, so a completion is one more such span."""

from __future__ import annotations

import os
from dataclasses import dataclass

from spanpipe.emit.rollout import ROLLOUT_SPAN, STATUS
from spanpipe.emit.setup import ATTEMPT_ID, ROLLOUT_ID
from spanpipe.spanbatch import Resource, SpanBatch

COMPLETED_BY = "spanpipe.rollout.completed_by"
STATUS_OK, STATUS_ERROR = 1, 2
KIND_INTERNAL = 1


@dataclass(frozen=True)
class Completion:
    rollout_id: str
    attempt_id: str | None
    trace_id: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    failed: bool
    completed_by: str  # "idle_timeout", "api"


def completion_batch(completions: list[Completion], rollout_key: str = ROLLOUT_ID,
                     attempt_key: str = ATTEMPT_ID) -> SpanBatch:
    b = SpanBatch(resources=[Resource({"service.name": "spanpipe"}, "spanpipe")])
    for c in completions:
        attrs = {rollout_key: c.rollout_id, STATUS: "failed" if c.failed else "succeeded",
                 COMPLETED_BY: c.completed_by}
        if c.attempt_id is not None:
            attrs[attempt_key] = c.attempt_id
        b.trace_id.append(c.trace_id)
        b.span_id.append(os.urandom(8).hex())
        b.parent_span_id.append(None)
        b.trace_state.append("")
        b.name.append(ROLLOUT_SPAN)
        b.kind.append(KIND_INTERNAL)
        b.start_time_unix_nano.append(c.start_time_unix_nano)
        b.end_time_unix_nano.append(max(c.end_time_unix_nano, c.start_time_unix_nano))
        b.status_code.append(STATUS_ERROR if c.failed else STATUS_OK)
        b.status_message.append("failed" if c.failed else "")
        b.scope_name.append("spanpipe.rollout")
        b.scope_version.append("")
        b.attributes.append(attrs)
        b.events.append(None)
        b.links.append(None)
        b.resource_index.append(0)
    b.nbytes = 1024 * len(completions)
    return b
