"""Which agent a span stands for, across frameworks — one rule list, read in Python and in SQL.

Agent Lightning 0.3's order (OpenAI Agents `agent.name`, AgentOps agent spans' `operation.name`,
AutoGen `recipient_agent_type`, LangGraph `langchain.chain.type`, agent-framework `executor.id`,
Weave agents, Weave + LangChain chains), then OTel GenAI's `gen_ai.agent.name`.
"""

from __future__ import annotations

from typing import Any, Callable

# (attribute holding the name, condition: None | ("attr", key, value) | ("name_prefix", prefix))
AGENT_RULES: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("agent.name", None),
    ("operation.name", ("attr", "agentops.span.kind", "agent")),
    ("recipient_agent_type", None),
    ("langchain.chain.type", None),
    ("executor.id", None),
    ("agentlightning.operation.input.name", ("attr", "type", "agent")),
    ("lc_name", ("name_prefix", "langchain.Chain.")),
    ("gen_ai.agent.name", None),
)

AGENT_KEYS: tuple[str, ...] = tuple(dict.fromkeys(
    k for key, cond in AGENT_RULES for k in (key, *([cond[1]] if cond and cond[0] == "attr" else []))))


def agent_name(name: str, attrs: dict[str, Any]) -> str | None:
    for key, cond in AGENT_RULES:
        if cond is not None:
            if cond[0] == "attr" and attrs.get(cond[1]) != cond[2]:
                continue
            if cond[0] == "name_prefix" and not name.startswith(cond[1]):
                continue
        value = attrs.get(key)
        if value is not None:
            return str(value)
    return None


def agent_name_sql(get: Callable[[str], str], name_expr: str = "name") -> str:
    """The same rules as a SQL expression; `get(key)` is the SQL reading attribute `key` as text."""
    terms = []
    for key, cond in AGENT_RULES:
        if cond is None:
            terms.append(get(key))
        elif cond[0] == "attr":
            terms.append(f"CASE WHEN {get(cond[1])} = '{cond[2]}' THEN {get(key)} END")
        else:
            terms.append(f"CASE WHEN {name_expr} LIKE '{cond[1]}%' THEN {get(key)} END")
    return "COALESCE(" + ", ".join(terms) + ")"
