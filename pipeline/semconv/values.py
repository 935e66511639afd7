"""Attribute values arrive as structured values, JSON strings or Python-repr strings; read all three.

Attribute text is untrusted: it is read by orjson or by `python_literal`, a linear, iterative
reader of the literals `repr` writes (never `ast.literal_eval`, whose syntax tree for a 3 MB
token-id tuple cost gigabytes), and only up to MAX_LITERAL_CHARS.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import orjson

MAX_LITERAL_CHARS = 16 * 1024 * 1024
MAX_DEPTH = 256

# Tokens of Python literals; each alternative is unambiguous, so matching is linear.
_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<num>-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
  | (?P<name>True|False|None)
  | (?P<punct>[\[\](){},:])
)""", re.VERBOSE)
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"', "a": "\a",
                   "b": "\b", "f": "\f", "v": "\v", "\n": ""}
_NAMES = {"True": True, "False": False, "None": None}
_CLOSE = {"[": "]", "(": ")", "{": "}"}


class NotALiteral(ValueError):
    pass


def _unescape(body: str) -> str:
    if "\\" not in body:
        return body

    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] in "xuU" and len(e) > 1:
            return chr(int(e[1:], 16))
        return _SIMPLE_ESCAPES.get(e, "\\" + e)

    return _ESCAPE.sub(one, body)


_INT_SEQUENCE = re.compile(r"[\[(][\d\s,\-]*[\])]")
_TRAILING_COMMA = re.compile(r"(\d)\s*,\s*\]")
_BIG_INT = re.compile(r"\d{19}")  # past int64: orjson would read a float


def _int_sequence(text: str) -> Any:
    """`(1, 2, 3)` / `[1, 2,]` (token ids as Python writes them) through orjson, or None."""
    if not _INT_SEQUENCE.fullmatch(text) or text[-1] != _CLOSE[text[0]] or _BIG_INT.search(text):
        return None
    try:
        return orjson.loads(_TRAILING_COMMA.sub(r"\1]", "[" + text[1:-1] + "]"))
    except orjson.JSONDecodeError:
        return None


def python_literal(text: str) -> Any:
    """The value of a Python literal (str, int, float, bool, None, list, tuple as list, dict), read
    in one pass with an explicit stack; NotALiteral for anything else."""
    if len(text) > MAX_LITERAL_CHARS:
        raise NotALiteral(f"longer than {MAX_LITERAL_CHARS} characters")
    ints = _int_sequence(text)
    if ints is not None:
        return ints
    # Each open container: [opening char, items, pending dict key, expecting a value?]
    stack: list[list[Any]] = []
    result: Any = None
    done = False
    pos, end = 0, len(text)
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise NotALiteral(f"unexpected text at {pos}")
            break
        pos = m.end()
        kind = m.lastgroup
        tok = m.group(kind)
        if kind == "punct" and tok in "[({":
            if done or (stack and not stack[-1][3]):
                raise NotALiteral(f"unexpected {tok!r}")
            if len(stack) >= MAX_DEPTH:
                raise NotALiteral("nested too deeply")
            stack.append([tok, {} if tok == "{" else [], None, True])
            continue
        if kind == "punct" and tok in "])}":
            if not stack or _CLOSE[stack[-1][0]] != tok or stack[-1][2] is not None:
                raise NotALiteral(f"unexpected {tok!r}")
            value = stack.pop()[1]
        elif kind == "punct" and tok == ",":
            if not stack or stack[-1][3] or stack[-1][2] is not None:
                raise NotALiteral("unexpected ','")
            stack[-1][3] = True
            continue
        elif kind == "punct":  # ":"
            top = stack[-1] if stack else None
            if top is None or top[0] != "{" or top[2] is None or top[3] is not True:
                raise NotALiteral("unexpected ':'")
            top[3] = "value"
            continue
        elif kind == "str":
            value = _unescape(tok[1:-1])
        elif kind == "num":
            try:
                value = int(tok) if tok.lstrip("-").isdigit() else float(tok)
            except ValueError:  # more digits than Python converts
                raise NotALiteral("number too long") from None
        else:
            value = _NAMES[tok]
        if not stack:
            if done:
                raise NotALiteral("more than one value")
            result, done = value, True
            continue
        top = stack[-1]
        if not top[3]:
            raise NotALiteral("missing ','")
        if top[0] != "{":
            top[1].append(value)
            top[3] = False
        elif top[3] == "value":
            try:
                top[1][top[2]] = value
            except TypeError:
                raise NotALiteral("unhashable dict key") from None
            top[2], top[3] = None, False
        else:
            if isinstance(value, (list, dict)):
                raise NotALiteral("unhashable dict key")
            top[2] = value
    if stack or not done or pos < end and text[pos:].strip():
        raise NotALiteral("incomplete literal")
    return result


def loose(value: Any) -> Any:
    """A str that holds JSON or a Python literal becomes that value; anything else is returned as is."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text or text[0] not in "[{\"'(0123456789-tfnTFN":
        return value
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    if text[0] in "[{('\"":
        try:
            return python_literal(text)
        except NotALiteral:
            pass
    return value


def int_list(value: Any) -> list[int] | None:
    value = loose(value)
    if isinstance(value, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return list(value)
    return None


def indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """`prefix.0.role`, `prefix.0.content`, `prefix.1.role` → `[{"role", "content"}, {"role"}]`,
    nested keys kept dotted (`tool_calls.0.name`)."""
    dot = prefix + "."
    rows: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(dot):
            continue
        idx, _, rest = key[len(dot):].partition(".")
        if idx.isdigit() and rest:
            rows.setdefault(int(idx), {})[rest] = value
    return [rows[i] for i in sorted(rows)]


def first_present(keys: Iterable[str], *sources: Mapping[str, Any]) -> Any:
    """The first value that is set (not None, not "") for `keys`, searching `sources` in order."""
    for src in sources:
        for k in keys:
            v = src.get(k)
            if v is not None and v != "":
                return v
    return None


def unflatten(flat: dict[str, Any]) -> dict[str, Any] | list[Any]:
    """The inverse of `flatten`: a level whose keys are exactly 0..n-1 becomes a list."""
    root: dict[str, Any] = {}
    for key, value in flat.items():
        node = root
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value

    def listify(node: dict[str, Any]) -> Any:
        for k, v in node.items():
            if type(v) is dict:
                node[k] = listify(v)
        if node and all(k.isdigit() for k in node) and all(str(i) in node for i in range(len(node))):
            return [node[str(i)] for i in range(len(node))]
        return node

    return listify(root)


def under_prefix(attributes: Mapping[str, Any], prefix: str) -> dict[str, Any] | list[Any]:
    """The attributes below `prefix.`, unflattened (`agentlightning.reward.0.value` → `[{"value": …}]`)."""
    dot = prefix + "."
    return unflatten({k[len(dot):]: v for k, v in attributes.items() if k.startswith(dot)})
