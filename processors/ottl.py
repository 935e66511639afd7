"""A small, documented subset of OTTL (the OpenTelemetry Transformation Language) for span and log
record conditions.

Supported, as in otelcol's filter processor:
* span paths: `name`, `kind`, `status.code`, `status.message`, `trace_id.string`, `span_id.string`,
  `parent_span_id.string`, `trace_state`, `start_time_unix_nano`, `end_time_unix_nano`,
  `duration_ns` (ours), `attributes["key"]`, `resource.attributes["key"]`,
  `instrumentation_scope.name`, `instrumentation_scope.version`;
* log record paths: `body`, `body["key"]` (a map body), `severity_number`, `severity_text`,
  `event_name`, `time_unix_nano`, `observed_time_unix_nano`, `trace_id.string`, `span_id.string`,
  `attributes["key"]`, `resource.attributes["key"]`, `instrumentation_scope.name`;
* literals: strings in double quotes, ints, floats, `true`, `false`, `nil`, and the enums
  `SPAN_KIND_*`, `STATUS_CODE_*` (spans), `SEVERITY_NUMBER_*` (log records);
* operators: `==`, `!=`, `<`, `<=`, `>`, `>=`, `and`, `or`, `not`, parentheses;
* functions: `IsMatch(target, "regex")`, `IsString(x)`, `IsInt(x)`, `IsDouble(x)`, `IsBool(x)`.
Comparing values of different types is false (never an error), as in OTTL. Anything else is a
config error naming the condition. Parsing uses Python's own tokenizer and AST on the condition
text, with a whitelist; nothing is evaluated by Python itself.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from spanpipe.spanbatch import KIND_NAMES, STATUS_NAMES, SpanBatch
from spanpipe.userregex import RegexError, compile_regex

LITERALS = {"true": True, "false": False, "nil": None}
CONSTANTS = dict(LITERALS)
CONSTANTS.update({f"SPAN_KIND_{k}": i for i, k in enumerate(KIND_NAMES)})
CONSTANTS.update({f"STATUS_CODE_{s}": i for i, s in enumerate(STATUS_NAMES)})


@dataclass(slots=True)
class SpanView:
    """What a condition can see of one span."""

    name: str
    kind: int
    status_code: int
    status_message: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    trace_state: str
    start: int
    end: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str
    scope_version: str

    @classmethod
    def of(cls, b: SpanBatch, i: int) -> SpanView:
        return cls(b.name[i], b.kind[i], b.status_code[i], b.status_message[i], b.trace_id[i], b.span_id[i],
                   b.parent_span_id[i], b.trace_state[i], b.start_time_unix_nano[i], b.end_time_unix_nano[i],
                   b.attributes[i], b.resource_attributes(i), b.scope_name[i], b.scope_version[i])


PATHS: dict[str, Callable[[SpanView], Any]] = {
    "name": lambda s: s.name,
    "kind": lambda s: s.kind,
    "status.code": lambda s: s.status_code,
    "status.message": lambda s: s.status_message,
    "trace_id.string": lambda s: s.trace_id,
    "span_id.string": lambda s: s.span_id,
    "parent_span_id.string": lambda s: s.parent_span_id or "",
    "trace_state": lambda s: s.trace_state,
    "start_time_unix_nano": lambda s: s.start,
    "end_time_unix_nano": lambda s: s.end,
    "duration_ns": lambda s: s.end - s.start,
    "instrumentation_scope.name": lambda s: s.scope_name,
    "instrumentation_scope.version": lambda s: s.scope_version,
}



@dataclass(slots=True)
class LogView:
    """What a condition can see of one log record (a row of `spanpipe.otlp_logs.LOGS_COLUMNS`)."""

    body: Any
    severity_number: int
    severity_text: str
    event_name: str
    time: int
    observed_time: int
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str

    @classmethod
    def rows(cls, table: Any) -> list[LogView]:
        def parsed(text: str | None) -> Any:
            return orjson.loads(text) if text else None

        return [cls(parsed(r["body"]), r["severity_number"] or 0, r["severity_text"] or "", r["event_name"] or "",
                    r["time_unix_nano"] or 0, r["observed_time_unix_nano"] or 0, r["trace_id"] or "",
                    r["span_id"] or "", parsed(r["attributes"]) or {}, parsed(r["resource_attributes"]) or {},
                    r["scope_name"] or "") for r in table.to_pylist()]


LOG_PATHS: dict[str, Callable[[LogView], Any]] = {
    "body": lambda r: r.body,
    "severity_number": lambda r: r.severity_number,
    "severity_text": lambda r: r.severity_text,
    "event_name": lambda r: r.event_name,
    "time_unix_nano": lambda r: r.time,
    "observed_time_unix_nano": lambda r: r.observed_time,
    "trace_id.string": lambda r: r.trace_id,
    "span_id.string": lambda r: r.span_id,
    "instrumentation_scope.name": lambda r: r.scope_name,
}
_SEVERITIES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
LOG_CONSTANTS = {**LITERALS, "SEVERITY_NUMBER_UNSPECIFIED": 0}
LOG_CONSTANTS.update({f"SEVERITY_NUMBER_{s}{'' if k == 0 else k + 1}": 1 + 4 * i + k
                      for i, s in enumerate(_SEVERITIES) for k in range(4)})


@dataclass(frozen=True)
class Context:
    """The paths, maps (`base["key"]`) and constants a condition may name (OTTL's span or log context)."""

    paths: dict[str, Callable[[Any], Any]]
    maps: dict[str, Callable[[Any], dict[str, Any]]]
    constants: dict[str, Any]


SPAN = Context(PATHS, {"attributes": lambda s: s.attributes, "resource.attributes": lambda s: s.resource},
               CONSTANTS)
LOG = Context(LOG_PATHS, {"attributes": lambda r: r.attributes, "resource.attributes": lambda r: r.resource,
                          "body": lambda r: r.body if isinstance(r.body, dict) else {}}, LOG_CONSTANTS)

Evaluator = Callable[[Any], Any]


class ConditionError(ValueError):
    pass


def _translate(text: str) -> str:
    """OTTL tokens → Python tokens: `true/false/nil` and enum names become names we resolve."""
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.OP and tok.string in ("&&", "||"):
                raise ConditionError("use 'and' / 'or'")
            out.append((tok.type, tok.string))
    except (tokenize.TokenError, IndentationError) as exc:
        raise ConditionError(f"cannot parse: {exc}") from None
    return tokenize.untokenize(out)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _same_type(a: Any, b: Any) -> bool:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, num) and isinstance(b, num)) or type(a) is type(b)


_CMP = {
    ast.Eq: lambda a, b: a == b if (a is None or b is None or _same_type(a, b)) else False,
    ast.NotEq: lambda a, b: a != b if (a is None or b is None or _same_type(a, b)) else True,
    ast.Lt: lambda a, b: _same_type(a, b) and a is not None and a < b,
    ast.LtE: lambda a, b: _same_type(a, b) and a is not None and a <= b,
    ast.Gt: lambda a, b: _same_type(a, b) and a is not None and a > b,
    ast.GtE: lambda a, b: _same_type(a, b) and a is not None and a >= b,
}


def _compile(node: ast.AST, ctx: Context) -> Evaluator:
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, ctx) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda s: all(p(s) for p in parts)
        return lambda s: any(p(s) for p in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _compile(node.operand, ctx)
        return lambda s: not inner(s)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = -node.operand.value
        return lambda s: value
    if isinstance(node, ast.Compare):
        if len(node.ops) != 1:
            raise ConditionError("chain comparisons with 'and'")
        op = _CMP.get(type(node.ops[0]))
        if op is None:
            raise ConditionError(f"unsupported operator {type(node.ops[0]).__name__}")
        left, right = _compile(node.left, ctx), _compile(node.comparators[0], ctx)
        return lambda s: bool(op(left(s), right(s)))
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)):
        value = node.value
        return lambda s: value
    if isinstance(node, ast.Subscript):
        base = _dotted(node.value)
        key = node.slice
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            raise ConditionError("attribute keys must be string literals")
        k = key.value
        the_map = ctx.maps.get(base or "")
        if the_map is None:
            raise ConditionError(f"unknown map '{base}'")
        return lambda s: the_map(s).get(k)
    if isinstance(node, ast.Call):
        fname = _dotted(node.func)
        args = [_compile(a, ctx) for a in node.args]
        if fname == "IsMatch":
            if len(node.args) != 2 or not (isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
                raise ConditionError('IsMatch(target, "regex") takes a target and a string pattern')
            try:
                rx = compile_regex(node.args[1].value)
            except RegexError as exc:
                raise ConditionError(str(exc)) from None
            target = args[0]
            return lambda s: isinstance(v := target(s), str) and rx.search(v) is not None
        checks = {"IsString": str, "IsInt": int, "IsDouble": float, "IsBool": bool}
        if fname in checks and len(args) == 1:
            typ, target = checks[fname], args[0]
            if typ is int:
                return lambda s: isinstance(v := target(s), int) and not isinstance(v, bool)
            return lambda s: isinstance(target(s), typ)
        raise ConditionError(f"unknown function '{fname}'")
    dotted = _dotted(node)
    if dotted is not None:
        if dotted in ctx.constants:
            value = ctx.constants[dotted]
            return lambda s: value
        if dotted in ctx.paths:
            return ctx.paths[dotted]
        raise ConditionError(f"unknown path or name '{dotted}'")
    raise ConditionError(f"unsupported expression: {ast.dump(node)[:60]}")


def compile_condition(text: str, ctx: Context = SPAN) -> Evaluator:
    try:
        tree = ast.parse(_translate(text).strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"cannot parse: {exc.msg}") from None
    return _compile(tree.body, ctx)
