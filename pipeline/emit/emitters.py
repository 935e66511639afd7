"""The emitters: rewards, annotations, messages, objects, exceptions and operations as OTel spans.

Each produces the span names and attributes Agent Lightning 0.3 produces for the same input
(`tests/fixtures/emit_attributes.json` holds them; `make compat` compares live).
"""

from __future__ import annotations

import base64
import functools
import inspect
import json
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import Status, StatusCode

from spanpipe.emit import attributes as A
from spanpipe.emit.setup import tracer as _active_tracer

ANNOTATION = "agentlightning.annotation"
MESSAGE = "agentlightning.message"
OBJECT = "agentlightning.object"
EXCEPTION = "agentlightning.exception"
OPERATION = "agentlightning.operation"

MESSAGE_BODY = "agentlightning.message.body"
OBJECT_TYPE = "agentlightning.object.type"
OBJECT_LITERAL = "agentlightning.object.literal"
OBJECT_JSON = "agentlightning.object.json"
OPERATION_NAME = "agentlightning.operation.name"
OPERATION_INPUT = "agentlightning.operation.input"
OPERATION_OUTPUT = "agentlightning.operation.output"

_Fn = TypeVar("_Fn", bound=Callable[..., Any])


@dataclass(frozen=True)
class EmittedSpan:
    """What an emit call produced: the span's fields, whether or not it was sent."""

    name: str
    attributes: dict[str, Any]
    trace_id: str
    span_id: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: str
    status_message: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, span: ReadableSpan) -> EmittedSpan:
        ctx = span.get_span_context()
        return cls(name=span.name, attributes=dict(span.attributes or {}),
                   trace_id=trace.format_trace_id(ctx.trace_id), span_id=trace.format_span_id(ctx.span_id),
                   start_time_unix_nano=span.start_time or 0, end_time_unix_nano=span.end_time or 0,
                   status_code=span.status.status_code.name, status_message=span.status.description,
                   events=[{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events])


_local_provider = TracerProvider()  # no processors: spans built with propagate=False go nowhere


def _tracer(propagate: bool) -> trace.Tracer:
    return _active_tracer() if propagate else _local_provider.get_tracer("spanpipe.emit")


def _instant_span(name: str, attributes: dict[str, Any], propagate: bool, ok: bool = True) -> EmittedSpan:
    span = _tracer(propagate).start_span(name, attributes=attributes)
    if ok:
        span.set_status(Status(StatusCode.OK))
    span.end()
    return EmittedSpan.of(span)  # type: ignore[arg-type]


def emit_annotation(annotation: dict[str, Any], propagate: bool = True) -> EmittedSpan:
    """An `agentlightning.annotation` span carrying `annotation`, flattened to dotted keys."""
    flat = A.flatten(annotation)
    A.check(flat)
    return _instant_span(ANNOTATION, A.sanitize(flat), propagate)


def emit_reward(reward: float | dict[str, Any], *, primary_key: str | None = None,
                attributes: dict[str, Any] | None = None, propagate: bool = True) -> EmittedSpan:
    """A reward: `agentlightning.reward.<i>.name` / `.value`, the primary dimension at index 0."""
    if isinstance(reward, dict):
        dims: dict[str, float] = {}
        for k, v in reward.items():
            if isinstance(v, (int, bool, float)):
                dims[k] = float(v)
            else:
                raise ValueError(f"Reward value must be a number, got: {type(v)} for key {k}")
        if primary_key is None:
            raise ValueError("When emitting a multi-dimensional reward as a dict, primary_key must be provided.")
        if primary_key not in dims:
            raise ValueError(f"Primary key '{primary_key}' not found in reward dict keys: {list(dims)}")
        listed = [{"name": primary_key, "value": dims[primary_key]}]
        listed += [{"name": k, "value": v} for k, v in dims.items() if k != primary_key]
    else:
        if not isinstance(reward, (int, bool, float)):
            raise TypeError(f"Reward must be a number, got: {type(reward)}")
        listed = [{"name": "primary", "value": float(reward)}]
    return emit_annotation({A.REWARD_PREFIX: listed, **(attributes or {})}, propagate=propagate)


def reward(fn: _Fn) -> _Fn:
    """Agent Lightning's `@reward` decorator (sync or async): the function's number is emitted as
    a reward (`emit_reward`) when it returns, and returned unchanged. A result that is not a number
    (None included) is not a reward: a warning, as Agent Lightning gives, and no span."""

    def record(result: Any) -> Any:
        if isinstance(result, (int, float)) and not isinstance(result, bool):
            emit_reward(float(result))
        else:
            warnings.warn(f"Reward is ignored because it is not a number: {result!r}", stacklevel=3)
        return result

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper_async(*args: Any, **kwargs: Any) -> Any:
            return record(await fn(*args, **kwargs))
        return wrapper_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return record(fn(*args, **kwargs))
    return wrapper  # type: ignore[return-value]


def emit_message(message: str, attributes: dict[str, Any] | None = None, propagate: bool = True) -> EmittedSpan:
    if not isinstance(message, str):
        raise TypeError(f"Message must be a string or list of strings, got: {type(message)}.")
    attrs: dict[str, Any] = {MESSAGE_BODY: message, **A.flat_sanitized(attributes)}
    return _instant_span(MESSAGE, attrs, propagate, ok=False)


def _qualified_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def encode_object(obj: Any) -> dict[str, Any]:
    if isinstance(obj, (str, int, float, bool)):
        return {OBJECT_TYPE: type(obj).__name__, OBJECT_LITERAL: str(obj)}
    if isinstance(obj, bytes):
        return {OBJECT_TYPE: "bytes", OBJECT_LITERAL: base64.b64encode(obj).decode("utf-8")}
    try:
        serialized = json.dumps(obj)
    except (TypeError, ValueError) as exc:
        raise RuntimeError(f"Object must be JSON serializable, got: {type(obj)}.") from exc
    return {OBJECT_TYPE: _qualified_name(type(obj)), OBJECT_JSON: serialized}


def emit_object(obj: Any, attributes: dict[str, Any] | None = None, propagate: bool = True) -> EmittedSpan:
    """An object: literals (str/int/float/bool, bytes as base64) or `json.dumps` of anything else."""
    return _instant_span(OBJECT, {**encode_object(obj), **A.flat_sanitized(attributes)}, propagate)


def exception_attributes(exc: BaseException) -> dict[str, Any]:
    attrs: dict[str, Any] = {"exception.type": type(exc).__name__, "exception.message": str(exc),
                             "exception.escaped": True}
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if stack.strip():
        attrs["exception.stacktrace"] = stack
    return attrs


def emit_exception(exception: BaseException, attributes: dict[str, Any] | None = None,
                   propagate: bool = True) -> EmittedSpan:
    if not isinstance(exception, BaseException):
        raise TypeError(f"Expected a BaseException instance, got: {type(exception)}.")
    attrs = {**exception_attributes(exception), **A.flat_sanitized(attributes)}
    return _instant_span(EXCEPTION, attrs, propagate)


def _input_attributes(items: Iterator[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in items:
        for nested, v in A.flatten({key: value}).items():
            out[f"{OPERATION_INPUT}.{nested}"] = v
    return out


class Operation:
    """An `agentlightning.operation` span: a decorator (inputs and output recorded from the call)
    or a context manager (`op.set_input(...)`, `op.set_output(...)`)."""

    def __init__(self, attributes: dict[str, Any], propagate: bool = True) -> None:
        self.attributes = A.flatten(attributes)
        self.tracer = _tracer(propagate)
        self._cm: Any = None
        self._span: Any = None
        self.result: EmittedSpan | None = None

    def __enter__(self) -> Operation:
        self._cm = self.tracer.start_as_current_span(OPERATION, attributes=A.sanitize(self.attributes))
        self._span = self._cm.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._cm.__exit__(exc_type, exc, tb)
        self.result = EmittedSpan.of(self._span)
        self._cm = None

    def span(self) -> EmittedSpan:
        if self.result is None:
            raise RuntimeError("Span is not ready yet.")
        return self.result

    def set_input(self, *args: Any, **kwargs: Any) -> None:
        if self._cm is None:
            raise RuntimeError("No recording context found. Cannot set input.")
        items = [(f"args.{i}", v) for i, v in enumerate(args)] + list(kwargs.items())
        self._span.set_attributes(A.sanitize(_input_attributes(iter(items))))

    def set_output(self, output: Any) -> None:
        if self._cm is None:
            raise RuntimeError("No recording context found. Cannot set output.")
        self._span.set_attributes(A.sanitize(A.flatten({OPERATION_OUTPUT: output})))

    def __call__(self, fn: _Fn) -> _Fn:
        sig = inspect.signature(fn)
        fixed = A.sanitize({OPERATION_NAME: fn.__name__, **self.attributes})

        def inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            try:
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
            except TypeError:
                items = [(f"args.{i}", v) for i, v in enumerate(args)]
                return _input_attributes(iter(items + ([("kwargs", kwargs)] if kwargs else [])))
            items = []
            for name, value in bound.arguments.items():
                if sig.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL:
                    items += [(f"{name}.{i}", v) for i, v in enumerate(value)]
                else:
                    items.append((name, value))
            return _input_attributes(iter(items))

        def record(span: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            attrs = inputs(args, kwargs)
            if attrs:
                span.set_attributes(A.sanitize(attrs))

        def output(span: Any, result: Any) -> None:
            span.set_attributes(A.sanitize(A.flatten({OPERATION_OUTPUT: result})))

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.tracer.start_as_current_span(OPERATION, attributes=fixed) as span:
                    record(span, args, kwargs)
                    result = await fn(*args, **kwargs)
                    output(span, result)
                    return result
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.tracer.start_as_current_span(OPERATION, attributes=fixed) as span:
                record(span, args, kwargs)
                result = fn(*args, **kwargs)
                output(span, result)
                return result
        return wrapper  # type: ignore[return-value]


def operation(fn: Callable[..., Any] | None = None, *, propagate: bool = True, name: str | None = None,
              **attributes: Any) -> Any:
    """`@operation`, `@operation(category=...)`, or `with operation(user=...) as op:`."""
    if name is not None:
        if OPERATION_NAME in attributes:
            raise ValueError("Cannot specify both `name` and `additional_attributes.operation_name`.")
        attributes[OPERATION_NAME] = name
    if callable(fn):
        return Operation(attributes, propagate)(fn)
    if fn is not None:
        raise ValueError("Custom span names are intentionally not supported when used as a context manager.")
    return Operation(attributes, propagate)


