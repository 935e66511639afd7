"""`rollout()`: the span that frames one rollout, and the ids every span inside it carries.

The ids travel as W3C baggage in the OTel context, so they follow asyncio tasks and threads that
copy the context, reach other services through baggage propagation, and are put on every span
that starts inside (ours or an instrumentation library's) by `EmitSpanProcessor.on_start`.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from opentelemetry import baggage, context, trace
from opentelemetry.trace import Status, StatusCode

from spanpipe.emit import attributes as A
from spanpipe.emit.emitters import exception_attributes
from spanpipe.emit.setup import ATTEMPT_ID, ROLLOUT_ID, TASK_ID, tracer

ROLLOUT_SPAN = "agentlightning.rollout"
MODE = "agentlightning.rollout.mode"
STATUS = "agentlightning.rollout.status"
INPUT = "agentlightning.rollout.input"
OUTPUT = "agentlightning.rollout.output"

Mode = Literal["train", "val", "test"]


def new_rollout_id() -> str:
    return "ro-" + secrets.token_hex(6)


def new_attempt_id() -> str:
    return "at-" + secrets.token_hex(4)


class Rollout:
    """`with rollout(...) as r:` / `async with rollout(...) as r:`; `r.rollout_id`, `r.set_output(x)`."""

    def __init__(self, rollout_id: str | None = None, attempt_id: str | None = None, mode: Mode = "train",
                 input: Any = None, attributes: dict[str, Any] | None = None, task_id: str | None = None) -> None:
        if mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be 'train', 'val' or 'test', got {mode!r}")
        self.rollout_id = rollout_id or new_rollout_id()
        self.attempt_id = attempt_id or new_attempt_id()
        self.mode = mode
        self.status: str | None = None
        self.task_id = task_id
        self._attrs = {ROLLOUT_ID: self.rollout_id, ATTEMPT_ID: self.attempt_id, MODE: mode,
                       **A.flat_sanitized(attributes)}
        if task_id is not None:
            self._attrs[TASK_ID] = task_id
        if input is not None:
            self._attrs.update(A.sanitize(A.flatten({INPUT: input})))
        self._token: Any = None
        self._span: Any = None

    def __enter__(self) -> Rollout:
        ctx = baggage.set_baggage(ROLLOUT_ID, self.rollout_id)
        ctx = baggage.set_baggage(ATTEMPT_ID, self.attempt_id, ctx)
        if self.task_id is not None:
            ctx = baggage.set_baggage(TASK_ID, self.task_id, ctx)
        self._span = tracer().start_span(ROLLOUT_SPAN, context=ctx, attributes=self._attrs)
        self._token = context.attach(trace.set_span_in_context(self._span, ctx))
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc is None:
                self.status = "succeeded"
                self._span.set_status(Status(StatusCode.OK))
            else:
                self.status = "failed"
                self._span.record_exception(exc)
                self._span.set_attributes({k: v for k, v in exception_attributes(exc).items()
                                           if k != "exception.stacktrace"})
                self._span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            self._span.set_attribute(STATUS, self.status)
            self._span.end()
        finally:
            context.detach(self._token)

    async def __aenter__(self) -> Rollout:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def set_output(self, output: Any) -> None:
        self._span.set_attributes(A.sanitize(A.flatten({OUTPUT: output})))


def rollout(rollout_id: str | None = None, attempt_id: str | None = None, mode: Mode = "train",
            input: Any = None, attributes: dict[str, Any] | None = None, task_id: str | None = None) -> Rollout:
    """A rollout; `task_id` groups rollouts of one task (GRPO-style groups): it lands as
    `spanpipe.task_id` on the rollout span and travels in baggage to the llm_gateway."""
    return Rollout(rollout_id, attempt_id, mode, input, attributes, task_id)


def current_rollout_id() -> str | None:
    value = baggage.get_baggage(ROLLOUT_ID)
    return str(value) if value is not None else None
