"""The reward processor's per-span reading (span type, reward, response id, reward dimensions) as
a derivation (spanpipe.derived), so decode workers compute it; kept apart from the processor so
that a worker loads neither pydantic nor pyarrow to unpickle it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

from spanpipe.derived import Derivation
from spanpipe.semconv.promoted_columns import Promoted, RewardReader

if TYPE_CHECKING:
    from spanpipe.spanbatch import SpanBatch


class ReadRewards(Derivation):
    """What the processor reads from each span, for the decode workers to do."""

    name = "reward"

    def __init__(self, llm_span_name_pattern: str, extra_keys: list[str], classify: bool,
                 log: logging.Logger | None = None) -> None:
        self.settings = (llm_span_name_pattern, list(extra_keys), classify)
        self.key = f"{self.name}:" + orjson.dumps(self.settings).decode()
        self.reader = RewardReader(llm_span_name_pattern, extra_keys, classify, log)

    def __reduce__(self) -> tuple[Any, ...]:
        return ReadRewards, self.settings  # the reader (compiled patterns) is built again there

    def derive(self, batch: SpanBatch) -> Promoted:
        return self.reader.read(batch)
