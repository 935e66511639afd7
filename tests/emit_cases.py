"""A table of emitter inputs, run against any module with Agent Lightning's emitter API.

`capture(api, provider_exporter)` runs every case and returns, per case, the spans it produced
(name, status, attributes) or the error it raised. `make compat` runs it against agentlightning
0.3.0 and against `spanpipe.emit` and compares; `tests/fixtures/emit_attributes.json` keeps
Agent Lightning's answers for `make test`.
"""

from __future__ import annotations

import re
from typing import Any, Callable


def _raise_value_error() -> BaseException:
    try:
        raise ValueError("bad tool output")
    except ValueError as exc:
        return exc


class Point:
    pass


CASES: dict[str, Callable[[Any], Any]] = {
    "reward_float": lambda e: e.emit_reward(0.75),
    "reward_int": lambda e: e.emit_reward(1),
    "reward_bool": lambda e: e.emit_reward(True),
    "reward_negative": lambda e: e.emit_reward(-2.5),
    "reward_dict": lambda e: e.emit_reward({"task": 1.0, "efficiency": 0.5, "safety": 1}, primary_key="efficiency"),
    "reward_dict_primary_first": lambda e: e.emit_reward({"acc": 0.0, "len": 3}, primary_key="acc"),
    "reward_with_attributes": lambda e: e.emit_reward(0.5, attributes={"source": "judge", "meta": {"k": [1, 2]}}),
    "reward_with_link": lambda e: e.emit_reward(0.5, attributes=e.make_link_attributes({"gen_ai.response.id": "resp-1"})),
    "reward_with_tags": lambda e: e.emit_reward(0.7, attributes=e.make_tag_attributes(["fast", "reliable"])),
    "reward_str": lambda e: e.emit_reward("1.0"),
    "reward_none": lambda e: e.emit_reward(None),
    "reward_dict_no_primary": lambda e: e.emit_reward({"a": 1.0}),
    "reward_dict_unknown_primary": lambda e: e.emit_reward({"a": 1.0}, primary_key="b"),
    "reward_dict_bad_value": lambda e: e.emit_reward({"a": "x"}, primary_key="a"),
    "annotation_nested": lambda e: e.emit_annotation({"judge": {"model": "gpt", "scores": [0.1, 0.2]}, "tag": "x"}),
    "annotation_list_of_dicts": lambda e: e.emit_annotation({"items": [{"a": 1}, {"a": 2}]}),
    "annotation_bad_value": lambda e: e.emit_annotation({"x": None}),
    "message": lambda e: e.emit_message("hello world"),
    "message_attributes": lambda e: e.emit_message("step done", attributes={"step": 3, "info": {"ok": True}}),
    "message_not_str": lambda e: e.emit_message(42),
    "object_str": lambda e: e.emit_object("text"),
    "object_int": lambda e: e.emit_object(7),
    "object_float": lambda e: e.emit_object(0.1),
    "object_bool": lambda e: e.emit_object(False),
    "object_bytes": lambda e: e.emit_object(b"\x00\xffbin"),
    "object_dict": lambda e: e.emit_object({"answer": 42, "steps": ["a", "b"], "nested": {"x": None}}),
    "object_list": lambda e: e.emit_object([1, "two", 3.0]),
    "object_none": lambda e: e.emit_object(None),
    "object_unserializable": lambda e: e.emit_object(Point()),
    "object_attributes": lambda e: e.emit_object({"a": 1}, attributes={"kind": "state"}),
    "exception": lambda e: e.emit_exception(_raise_value_error()),
    "exception_attributes": lambda e: e.emit_exception(_raise_value_error(), attributes={"step": 2}),
    "exception_not_exception": lambda e: e.emit_exception("boom"),
    "operation_decorator": lambda e: e.operation(lambda x, y=2, *rest, **kw: x + y)(1, 5, 7, z={"q": 1}),
    "operation_decorator_attrs": lambda e: e.operation(category="compute")(_add)(2, y=3),
    "operation_named": lambda e: e.operation(name="tool_call")(_add)(1),
    "operation_context": lambda e: _operation_context(e),
    "operation_error": lambda e: e.operation(_fail)(1),
}


def _add(x: int, y: int = 1) -> dict[str, Any]:
    return {"sum": x + y, "inputs": [x, y]}


def _fail(x: int) -> None:
    raise KeyError(f"missing {x}")


def _operation_context(e: Any) -> None:
    with e.operation(user_id=123) as op:
        op.set_input("q", 4, data={"k": "v"}, items=[1, 2])
        op.set_output({"answer": "a", "n": [1.5, 2]})


def _normalise(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        if k == "exception.stacktrace":
            v = v.strip().splitlines()[-1]  # the frames name files, which differ between checkouts
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def capture(api: Any, finished: Callable[[], list[Any]], clear: Callable[[], None]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for case_id, run in CASES.items():
        clear()
        try:
            run(api)
            error = None
        except Exception as exc:
            error = {"type": type(exc).__name__, "message": re.sub(r" at 0x[0-9a-f]+", "", str(exc))}
        spans = [{"name": s.name, "status": s.status.status_code.name,
                  "attributes": _normalise(dict(s.attributes or {}))} for s in finished()]
        results[case_id] = {"error": error, "spans": spans}
    return results
