"""The rollout processor's stateless part: the ids each span carries itself (or its resource
does). A derivation (spanpipe.derived), so decode workers compute it; kept apart from the processor
so that a worker loads neither pydantic nor pyarrow to unpickle it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from spanpipe.derived import Derivation
from spanpipe.semconv.values import first_present
from spanpipe.spanbatch import rows_that_may_hold, values_of

if TYPE_CHECKING:
    from spanpipe.spanbatch import SpanBatch


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            return None
    return None


@dataclass(slots=True)
class RolloutIds:
    """The ids each span carries itself (or its resource does), before the trace memory fills
    the gaps: `untagged` lists the spans with no rollout id."""

    rollouts: list[str | None]
    attempts: list[str | None]
    given_seq: list[int | None]
    untagged: list[int]


class ReadRolloutIds(Derivation):
    """The stateless part of the processor: ids read from each span and its resource."""

    name = "rollout-ids"

    def __init__(self, rollout_id_keys: list[str], attempt_id_keys: list[str], sequence_id_keys: list[str]) -> None:
        self.rollout_id_keys, self.attempt_id_keys = list(rollout_id_keys), list(attempt_id_keys)
        self.sequence_id_keys = list(sequence_id_keys)
        self.key = f"{self.name}:" + orjson.dumps([self.rollout_id_keys, self.attempt_id_keys,
                                                   self.sequence_id_keys]).decode()

    def derive(self, batch: SpanBatch) -> RolloutIds:
        keys = (self.rollout_id_keys, self.attempt_id_keys, self.sequence_id_keys)
        res_ids = [tuple(first_present(k, r.attributes) for k in keys) for r in batch.resources]
        # What a span carrying none of the keys gets: its resource's ids.
        by_resource = [(None, None, None) if rollout is None else
                       (str(rollout), None if attempt is None else str(attempt), _as_int(seq))
                       for rollout, attempt, seq in res_ids]
        given = [by_resource[r] for r in batch.resource_index]
        out = RolloutIds([g[0] for g in given], [g[1] for g in given], [g[2] for g in given], [])
        carriers = rows_that_may_hold(batch.attributes, [k for ks in keys for k in ks])
        attributes = values_of(batch.attributes) if carriers is None else batch.attributes
        for i in range(len(batch)) if carriers is None else carriers:
            attrs = attributes[i]
            res_rollout, res_attempt, res_seq = res_ids[batch.resource_index[i]]
            rollout = first_present(self.rollout_id_keys, attrs)
            if rollout is None:
                rollout = res_rollout
            if rollout is None:
                out.rollouts[i] = out.attempts[i] = out.given_seq[i] = None
                continue
            attempt = first_present(self.attempt_id_keys, attrs)
            if attempt is None:
                attempt = res_attempt
            seq = first_present(self.sequence_id_keys, attrs)
            out.rollouts[i] = str(rollout)
            out.attempts[i] = None if attempt is None else str(attempt)
            out.given_seq[i] = _as_int(seq if seq is not None else res_seq)
        out.untagged = [i for i, rollout in enumerate(out.rollouts) if rollout is None]
        return out
