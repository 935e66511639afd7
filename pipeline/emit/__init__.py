"""Agent-side helpers: standard OTel spans for rewards, messages, objects, exceptions, operations
and rollouts, attribute-for-attribute what Agent Lightning 0.3 emits.

    from spanpipe import emit
    emit.configure(endpoint="http://127.0.0.1:4317", service_name="my-agent")
    with emit.rollout(mode="train", input=task) as r:
        ...  # LLM calls made here carry r.rollout_id
        emit.emit_reward(1.0)
    emit.shutdown()
"""

from spanpipe.emit.attributes import make_link_attributes, make_tag_attributes
from spanpipe.emit.emitters import (
    EmittedSpan,
    emit_annotation,
    emit_exception,
    emit_message,
    emit_object,
    emit_reward,
    operation,
    reward,
)
from spanpipe.emit.reading import (
    find_final_reward,
    find_reward_spans,
    get_message_value,
    get_object_value,
    get_reward_value,
    get_rewards_from_span,
    is_reward_span,
)
from spanpipe.emit.rollout import Rollout, current_rollout_id, rollout
from spanpipe.emit.setup import EmitError, configure, flush, shutdown

__all__ = [
    "EmitError", "EmittedSpan", "Rollout", "configure", "current_rollout_id", "emit_annotation",
    "emit_exception", "emit_message", "emit_object", "emit_reward", "find_final_reward",
    "find_reward_spans", "flush", "get_message_value", "get_object_value", "get_reward_value",
    "get_rewards_from_span", "is_reward_span", "make_link_attributes", "make_tag_attributes",
    "operation", "reward", "rollout", "shutdown",
]
