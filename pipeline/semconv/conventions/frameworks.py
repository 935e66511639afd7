"""Agent frameworks' own span attributes naming the agent, in Agent Lightning 0.3's order: OpenAI
Agents SDK (`agent.name`), AutoGen (`recipient_agent_type`), LangGraph (`langchain.chain.type`),
Microsoft agent-framework (`executor.id`), Weave agents (Agent Lightning operation spans of type
agent) and Weave-traced LangChain chains (`lc_name`)."""

from __future__ import annotations

from spanpipe.semconv.convention import AgentRule, Attrs, Convention, KindRule


def _named_agent(name: str, attrs: Attrs) -> str | None:
    return "agent" if "agent.name" in attrs else None


CONVENTION = Convention(
    name="frameworks",
    title="agent frameworks",
    kinds=(KindRule(85, _named_agent),),
    agents=(AgentRule(10, "agent.name"), AgentRule(30, "recipient_agent_type"), AgentRule(40, "langchain.chain.type"),
            AgentRule(50, "executor.id"),
            AgentRule(60, "agentlightning.operation.input.name", when_attr=("type", "agent")),
            AgentRule(70, "lc_name", when_name_prefix="langchain.Chain.")),
)
