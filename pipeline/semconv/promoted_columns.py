"""The promoted columns of a whole batch (`span_type`, `reward`, `response_id`, reward dimensions),
read span by span with `semconv.rewards.SpanReader`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

from spanpipe.semconv.rewards import SpanReader
from spanpipe.spanbatch import SpanBatch, values_of
from spanpipe.userregex import NameMatcher

DEFAULT_LLM_SPAN_NAME = r"openai\.chat\.completion"


@dataclass
class Promoted:
    """The promoted columns of one batch, and what reading them found."""

    span_type: list[str | None]
    reward: list[float | None]
    response_id: list[str | None]
    reward_dimensions: list[list[dict[str, Any]] | None]
    extracted: int
    malformed: int


class RewardReader:
    def __init__(self, llm_span_name_pattern: str = DEFAULT_LLM_SPAN_NAME, extra_keys: Iterable[str] = (),
                 classify_spans: bool = True, log: logging.Logger | None = None) -> None:
        self.span = SpanReader(NameMatcher(llm_span_name_pattern), extra_keys, classify_spans)
        self.log = log or logging.getLogger("spanpipe.semconv.promoted_columns")

    def read(self, batch: SpanBatch) -> Promoted:
        n = len(batch)
        out = Promoted([None] * n, [None] * n, [None] * n, [None] * n, 0, 0)
        columns = zip(values_of(batch.name), values_of(batch.attributes), values_of(batch.events))
        for i, (name, attrs, events) in enumerate(columns):
            read = self.span.read(name, attrs, events)
            if read.malformed is not None:
                out.malformed += 1
                self.log.debug("span %s/%s (%s): reward not set: %s", batch.trace_id[i], batch.span_id[i], name,
                               read.malformed)
            if read.dimensions:
                out.extracted += 1
            out.span_type[i], out.reward[i] = read.span_type, read.reward
            out.reward_dimensions[i], out.response_id[i] = read.dimensions, read.response_id
        return out
