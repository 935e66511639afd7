"""LiteLLM's OpenTelemetry callback in front of vLLM (`hosted_vllm/...` models): the token ids
vLLM returned, under `llm.hosted_vllm.*` — what Agent Lightning 0.3's LLM proxy records."""

from __future__ import annotations

from spanpipe.semconv.convention import Attrs, Convention, TokenIds
from spanpipe.semconv.values import int_list, loose


def _token_ids(attrs: Attrs) -> TokenIds:
    response = None
    nested = loose(attrs.get("llm.hosted_vllm.response_token_ids"))
    if isinstance(nested, list) and nested and isinstance(nested[0], list):
        response = int_list(nested[0])
    if response is None:
        choices = loose(attrs.get("llm.hosted_vllm.choices"))
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            response = int_list(choices[0].get("token_ids"))
    return TokenIds(int_list(attrs.get("llm.hosted_vllm.prompt_token_ids")), response)


CONVENTION = Convention(name="litellm", title="LiteLLM", token_ids=_token_ids)
