"""Which agent a span stands for: the agent rules of every convention (`semconv.conventions`), by
rank — read in Python and written as SQL from the same list."""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from spanpipe.semconv.convention import AgentRule
from spanpipe.semconv.conventions import ALL

AGENT_RULES: tuple[AgentRule, ...] = tuple(sorted((r for c in ALL for r in c.agents), key=lambda r: r.rank))

# Every attribute the rules read (what a query must fetch to decide).
AGENT_KEYS: tuple[str, ...] = tuple(dict.fromkeys(
    k for r in AGENT_RULES for k in (r.key, *([r.when_attr[0]] if r.when_attr else []))))


def agent_name(name: str, attrs: Mapping[str, Any]) -> str | None:
    for rule in AGENT_RULES:
        if rule.when_attr is not None and attrs.get(rule.when_attr[0]) != rule.when_attr[1]:
            continue
        if rule.when_name_prefix is not None and not name.startswith(rule.when_name_prefix):
            continue
        value = attrs.get(rule.key)
        if value is not None:
            return str(value)
    return None


def agent_name_sql(get: Callable[[str], str], name_expr: str = "name") -> str:
    """The same rules as a SQL expression; `get(key)` is the SQL reading attribute `key` as text."""
    terms = []
    for rule in AGENT_RULES:
        conditions = []
        if rule.when_attr is not None:
            conditions.append(f"{get(rule.when_attr[0])} = '{rule.when_attr[1]}'")
        if rule.when_name_prefix is not None:
            conditions.append(f"{name_expr} LIKE '{rule.when_name_prefix}%'")
        terms.append(f"CASE WHEN {' AND '.join(conditions)} THEN {get(rule.key)} END" if conditions else get(rule.key))
    return "COALESCE(" + ", ".join(terms) + ")"


def key_pattern(keys: tuple[str, ...]) -> str:
    """A regex finding any of `keys` as a quoted string in JSON text (RE2, DuckDB's engine)."""
    return '"(' + "|".join(re.escape(k) for k in keys) + ')"'


def agent_name_of_json_sql(attributes: str = "attributes", name_expr: str = "name") -> str:
    """The agent name of a span from its attributes' JSON text. Only a text that holds one of the
    rules' keys is parsed: one regex pass is far cheaper than parsing every span."""
    pattern = key_pattern(AGENT_KEYS).replace("'", "''")
    named = agent_name_sql(lambda k: f"json_extract_string({attributes}, '$.\"{k}\"')", name_expr)
    return f"CASE WHEN regexp_matches({attributes}::VARCHAR, '{pattern}') THEN {named} END"
