"""The `agentlightning.rollout` span spanpipe sends itself when it completes a rollout for the agent
(after `idle_timeout`, or on `POST /v1/rollouts/{id}/complete`): the one rule that makes a rollout
complete everywhere — warehouse, completion events, cursors, lake — is that its rollout span is
stored, so a completion is one more such span."""

from __future__ import annotations

import os
from dataclasses import dataclass

from spanpipe.emit.rollout import ROLLOUT_SPAN, STATUS
from spanpipe.emit.setup import ATTEMPT_ID, ROLLOUT_ID
from spanpipe.spanbatch import KIND_INTERNAL, STATUS_ERROR, STATUS_OK, Resource, SpanBatch

COMPLETED_BY = "spanpipe.rollout.completed_by"


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
        b.append_span(c.trace_id, os.urandom(8).hex(), None, ROLLOUT_SPAN, KIND_INTERNAL, c.start_time_unix_nano,
                      max(c.end_time_unix_nano, c.start_time_unix_nano), STATUS_ERROR if c.failed else STATUS_OK,
                      "failed" if c.failed else "", "spanpipe.rollout", "", attrs)
    b.nbytes = 1024 * len(completions)
    return b
