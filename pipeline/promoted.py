"""The promoted columns a warehouse needs — `rollout_id`, `attempt_id`, `sequence_id`, `span_type`,
`reward`, `response_id`, reward dimensions — derived where a pipeline has no `rollout` / `reward`
processor to fill them.

A plain otelcol pipeline (`otlp → memory_limiter, batch → duckdb/parquet`) once stored every span
with these NULL, and rollouts and triplets over it were empty without a word. The warehouse
exporters (`duckdb`, `parquet`) now derive what no processor filled, and say so once in the log:
rollout and attempt ids from span attributes, else resource attributes (Agent Lightning's keys),
else another span of the same trace in the same batch; span types and rewards by the reward
processor's own rules (`semconv.rewards`, `semconv.promoted_columns`). What only the `rollout`
processor gives — sequence ids, trace → rollout memory across batches, completion of idle rollouts —
stays absent; the message names the processors to add.
"""

from __future__ import annotations

import logging
from typing import Any

from spanpipe.emit.setup import ATTEMPT_ID, ROLLOUT_ID
from spanpipe.semconv.promoted_columns import RewardReader
from spanpipe.spanbatch import SpanBatch

SEQUENCE_ID = "agentlightning.span_sequence_id"


def _first(attrs: dict[str, Any], resource: dict[str, Any], key: str) -> Any:
    value = attrs.get(key)
    return resource.get(key) if value is None else value


class PromotedColumns:
    def __init__(self, owner: str, log: logging.Logger) -> None:
        self.owner, self.log = owner, log
        self.reader: RewardReader | None = None
        self._said: set[str] = set()

    def fill(self, batch: SpanBatch) -> SpanBatch:
        extra: dict[str, list[Any]] = {}
        if "rollout_id" not in batch.extra:
            extra.update(self._rollout_columns(batch))
            self._say("rollout", "rollout ids from span and resource attributes only: no sequence ids, no "
                      "trace → rollout memory across batches, no completion of idle rollouts")
        if "span_type" not in batch.extra:
            if self.reader is None:
                self.reader = RewardReader(log=self.log)
            read = self.reader.read(batch)
            extra.update(span_type=read.span_type, reward=read.reward, response_id=read.response_id,
                         reward_dimensions=read.reward_dimensions)
            self._say("reward", "span types and rewards by the reward processor's default rules")
        return batch.with_columns(**extra) if extra else batch

    def _say(self, processor: str, what: str) -> None:
        if processor not in self._said:
            self._said.add(processor)
            self.log.warning("%s: the pipeline has no `%s` processor; %s derives the columns itself (%s). "
                             "Add `%s` to the pipeline's processors for the full behaviour.",
                             self.owner, processor, self.owner, what, processor)

    @staticmethod
    def _rollout_columns(batch: SpanBatch) -> dict[str, list[Any]]:
        n = len(batch)
        rollouts: list[str | None] = [None] * n
        attempts: list[str | None] = [None] * n
        sequences: list[int | None] = [None] * n
        by_trace: dict[str, tuple[str, str | None]] = {}
        for i, attrs in enumerate(batch.attributes):
            resource = batch.resources[batch.resource_index[i]].attributes
            rollout = _first(attrs, resource, ROLLOUT_ID)
            if rollout is None:
                continue
            attempt = _first(attrs, resource, ATTEMPT_ID)
            rollouts[i], attempts[i] = str(rollout), None if attempt is None else str(attempt)
            seq = attrs.get(SEQUENCE_ID)
            sequences[i] = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
            by_trace.setdefault(batch.trace_id[i], (rollouts[i], attempts[i]))  # type: ignore[arg-type]
        for i in range(n):
            if rollouts[i] is None and batch.trace_id[i] in by_trace:
                rollouts[i], attempts[i] = by_trace[batch.trace_id[i]]
        return {"rollout_id": rollouts, "attempt_id": attempts, "sequence_id": sequences}
