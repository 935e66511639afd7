"""The `tail_sampling` processor: decide after seeing a whole trace — or a whole rollout.

otelcol's keys and policies (`decision_wait` 30s, `num_traces` 50000; `always_sample`,
`probabilistic`, `status_code`, `string_attribute`, `numeric_attribute`, `latency`,
`rate_limiting`, `and`, `composite`, `drop`), and the same verdict: a group is dropped if any
policy says drop (an `invert_match` hit or a `drop` policy), else kept if any policy samples it.

`group_by: rollout` decides per rollout instead of per trace (spans need `rollout_id`, so put
the `rollout` processor first; spans without one fall back to their trace). A group is decided
when its end span arrives (`rollout_end.span_names`, default the `agentlightning.rollout` span
that `spanpipe.emit.rollout()` opens, or any span matching `rollout_end.condition`, an OTTL
condition) plus `completion_grace`, or after `decision_wait` without a new span. Attribute
policies also see the promoted columns (`reward`, `span_type`, `rollout_id`, ...) when an
earlier processor set them.

Spans that arrive after their group was decided follow that decision (remembered for the last
`num_traces` × 2 groups). Memory is bounded by `num_traces`: past it the oldest undecided group is
evicted (dropped), counted and logged. And by the pace of what follows: while what was decided
cannot leave, new spans are refused (retryably) rather than held.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from spanpipe.arrowcolumn import ArrowColumn
from spanpipe.component import Consumer, Processor
from spanpipe.component import ComponentConfig
from spanpipe.configtypes import Duration
from spanpipe.errors import BackPressureError
from spanpipe.periodic import Periodic
from spanpipe.registry import Factory
from spanpipe.spanbatch import STATUS_NAMES, SpanBatch
from spanpipe.telemetry import counters
from spanpipe.processors.ottl import ConditionError, SpanView, compile_condition
from spanpipe.processors.probabilistic_sampler import fnv1a_32
from spanpipe.userregex import compile_regex

ROLLOUT_SPAN = "agentlightning.rollout"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProbabilisticPolicy(_Strict):
    sampling_percentage: float = Field(ge=0, le=100)
    hash_salt: str = ""


class StatusCodePolicy(_Strict):
    status_codes: list[Literal["OK", "ERROR", "UNSET"]] = Field(min_length=1)


class StringAttributePolicy(_Strict):
    key: str
    values: list[str] = Field(min_length=1)
    enabled_regex_matching: bool = False
    invert_match: bool = False


class NumericAttributePolicy(_Strict):
    key: str
    min_value: float | None = None
    max_value: float | None = None
    invert_match: bool = False


class LatencyPolicy(_Strict):
    threshold_ms: int = Field(ge=0)
    upper_threshold_ms: int = Field(0, ge=0)


class RateLimitingPolicy(_Strict):
    spans_per_second: int = Field(gt=0)


class SubPolicy(_Strict):
    name: str = ""
    type: Literal["always_sample", "probabilistic", "status_code", "string_attribute",
                  "numeric_attribute", "latency", "rate_limiting"]
    probabilistic: ProbabilisticPolicy | None = None
    status_code: StatusCodePolicy | None = None
    string_attribute: StringAttributePolicy | None = None
    numeric_attribute: NumericAttributePolicy | None = None
    latency: LatencyPolicy | None = None
    rate_limiting: RateLimitingPolicy | None = None


class AndPolicy(_Strict):
    and_sub_policy: list[SubPolicy] = Field(min_length=1)


class DropPolicy(_Strict):
    drop_sub_policy: list[SubPolicy] = Field(min_length=1)


class RateAllocation(_Strict):
    policy: str
    percent: float = Field(gt=0, le=100)


class CompositePolicy(_Strict):
    max_total_spans_per_second: int = Field(gt=0)
    policy_order: list[str] = Field(min_length=1)
    composite_sub_policy: list[SubPolicy] = Field(min_length=1)
    rate_allocation: list[RateAllocation] = []


class PolicyConfig(SubPolicy):
    type: Literal["always_sample", "probabilistic", "status_code", "string_attribute",  # type: ignore[assignment]
                  "numeric_attribute", "latency", "rate_limiting", "and", "composite", "drop"]
    and_: AndPolicy | None = Field(None, alias="and")
    composite: CompositePolicy | None = None
    drop: DropPolicy | None = None


class RolloutEnd(_Strict):
    span_names: list[str] = [ROLLOUT_SPAN]
    condition: str | None = None


class TailSamplingConfig(ComponentConfig):
    decision_wait: Duration = "30s"  # type: ignore[assignment]
    num_traces: int = Field(50_000, gt=0)
    expected_new_traces_per_sec: int = Field(0, ge=0)
    group_by: Literal["trace", "rollout"] = "trace"
    rollout_end: RolloutEnd = RolloutEnd()
    completion_grace: Duration = "1s"  # type: ignore[assignment]
    check_interval: Duration = "200ms"  # type: ignore[assignment]
    policies: list[PolicyConfig] = Field(min_length=1)

    def validate_config(self) -> None:
        for i, p in enumerate(self.policies):
            _check_policy(p, f"policies::{i}")
        if self.rollout_end.condition:
            try:
                compile_condition(self.rollout_end.condition)
            except ConditionError as exc:
                raise ValueError(f"rollout_end::condition: {exc}") from None


def _check_policy(p: SubPolicy, where: str) -> None:
    key = "and_" if p.type == "and" else p.type
    if p.type != "always_sample" and getattr(p, key, None) is None:
        raise ValueError(f"{where}: policy type '{p.type}' needs a '{p.type}' section")
    if isinstance(p, PolicyConfig):
        subs = (p.and_.and_sub_policy if p.and_ else []) + (p.drop.drop_sub_policy if p.drop else []) \
            + (p.composite.composite_sub_policy if p.composite else [])
        for j, sp in enumerate(subs):
            _check_policy(sp, f"{where}::{p.type}::{j}")
        if p.composite:
            names = {sp.name for sp in p.composite.composite_sub_policy}
            for n in p.composite.policy_order:
                if n not in names:
                    raise ValueError(f"{where}::composite::policy_order: no sub-policy named '{n}'")


SAMPLED, NOT_SAMPLED, DROPPED = "sampled", "not_sampled", "dropped"


@dataclass
class Group:
    key: str
    parts: list[SpanBatch] = field(default_factory=list)
    spans: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    complete_at: float | None = None


def _values(batch: SpanBatch, key: str) -> list[Any]:
    """An attribute (or promoted column) across a batch's spans."""
    col = batch.extra.get(key)
    if col is not None:
        return [v for v in col if v is not None]
    return [a[key] for a in batch.attributes if key in a]


class Evaluator:
    """One policy, compiled. `evaluate(parts)` → SAMPLED / NOT_SAMPLED / DROPPED."""

    def __init__(self, p: SubPolicy) -> None:
        self.p = p
        self.name = p.name or p.type
        self._tokens = 0.0
        self._refill = time.monotonic()
        if p.type == "string_attribute":
            sa = p.string_attribute
            self.rx = [compile_regex(v) for v in sa.values] if sa.enabled_regex_matching else None
        if isinstance(p, PolicyConfig):
            self.subs = [Evaluator(s) for s in (p.and_.and_sub_policy if p.and_ else p.drop.drop_sub_policy if p.drop
                                                else p.composite.composite_sub_policy if p.composite else [])]

    def _spend(self, spans: int, per_second: float) -> bool:
        now = time.monotonic()
        self._tokens = min(per_second, self._tokens + (now - self._refill) * per_second)
        self._refill = now
        if self._tokens >= spans or (self._tokens == per_second and spans > per_second):
            self._tokens -= spans
            return True
        return False

    def evaluate(self, key: str, parts: list[SpanBatch], spans: int) -> str:
        p, t = self.p, self.p.type
        if t == "always_sample":
            return SAMPLED
        if t == "probabilistic":
            pp = p.probabilistic
            h = fnv1a_32(pp.hash_salt.encode() + key.encode()) & 0x3FFF
            return SAMPLED if h < int(pp.sampling_percentage * 163.84) else NOT_SAMPLED
        if t == "status_code":
            wanted = {STATUS_NAMES.index(s) for s in p.status_code.status_codes}
            return SAMPLED if any(c in wanted for b in parts for c in b.status_code) else NOT_SAMPLED
        if t == "string_attribute":
            sa = p.string_attribute
            vals = [v for b in parts for v in _values(b, sa.key) if isinstance(v, str)]
            hit = any(any(r.fullmatch(v) for r in self.rx) for v in vals) if self.rx else any(v in sa.values for v in vals)
            if sa.invert_match:
                return DROPPED if hit else SAMPLED
            return SAMPLED if hit else NOT_SAMPLED
        if t == "numeric_attribute":
            na = p.numeric_attribute
            lo = -float("inf") if na.min_value is None else na.min_value
            hi = float("inf") if na.max_value is None else na.max_value
            vals = [v for b in parts for v in _values(b, na.key)
                    if isinstance(v, (int, float)) and not isinstance(v, bool)]
            hit = any(lo <= v <= hi for v in vals)
            if na.invert_match:
                return DROPPED if hit else SAMPLED
            return SAMPLED if hit else NOT_SAMPLED
        if t == "latency":
            lat = p.latency
            start = min(min(b.start_time_unix_nano) for b in parts)
            end = max(max(b.end_time_unix_nano) for b in parts)
            ms = (end - start) / 1e6
            ok = ms >= lat.threshold_ms and (not lat.upper_threshold_ms or ms <= lat.upper_threshold_ms)
            return SAMPLED if ok else NOT_SAMPLED
        if t == "rate_limiting":
            return SAMPLED if self._spend(spans, p.rate_limiting.spans_per_second) else NOT_SAMPLED
        if t == "and":
            results = [s.evaluate(key, parts, spans) for s in self.subs]
            return SAMPLED if all(r == SAMPLED for r in results) else NOT_SAMPLED
        if t == "drop":
            results = [s.evaluate(key, parts, spans) for s in self.subs]
            return DROPPED if all(r == SAMPLED for r in results) else NOT_SAMPLED
        if t == "composite":
            return self._composite(key, parts, spans)
        raise AssertionError(t)

    def _composite(self, key: str, parts: list[SpanBatch], spans: int) -> str:
        c = self.p.composite  # type: ignore[attr-defined]
        by_name = {s.name: s for s in self.subs}
        share = {a.policy: a.percent for a in c.rate_allocation}
        if not hasattr(self, "_budgets"):
            self._budgets = {n: Evaluator(SubPolicy(type="rate_limiting", rate_limiting=RateLimitingPolicy(
                spans_per_second=max(1, int(c.max_total_spans_per_second * share.get(n, 100 / len(c.policy_order)) / 100)))))
                for n in c.policy_order}
        for n in c.policy_order:
            if by_name[n].evaluate(key, parts, spans) == SAMPLED:
                return SAMPLED if self._budgets[n].evaluate(key, parts, spans) == SAMPLED else NOT_SAMPLED
        return NOT_SAMPLED


def verdict(results: list[str]) -> str:
    """otelcol's rule: any drop wins, then any sample, else not sampled."""
    if DROPPED in results:
        return DROPPED
    return SAMPLED if SAMPLED in results else NOT_SAMPLED


# A pass of the decider that has not handed its decided spans downstream after this long means the
# next stage (the writer) is not keeping up: new spans are refused until it does.
SENDING_BEHIND_S = 1.0


def distinct(column: Sequence[Any]) -> set[Any]:
    """A column's distinct values, found in Arrow when it is an Arrow array."""
    if isinstance(column, ArrowColumn):
        return set(pc.unique(column.array).to_pylist())
    return set(column)


class TailSamplingProcessor(Processor):
    def __init__(self, component_id: str, config: TailSamplingConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.config = config
        self.policies = [Evaluator(p) for p in config.policies]
        self.end_names = set(config.rollout_end.span_names)
        self.end_condition = compile_condition(config.rollout_end.condition) if config.rollout_end.condition else None
        self.groups: OrderedDict[str, Group] = OrderedDict()
        self.decided: OrderedDict[str, bool] = OrderedDict()
        self._lock = threading.Lock()
        self._sending_since: float | None = None
        self._decider = Periodic(f"{component_id}-decide", config.check_interval, self._send_due, self.log)

    def start(self) -> None:
        self._decider.start()

    def _group_keys(self, batch: SpanBatch) -> list[str]:
        if self.config.group_by == "rollout":
            rollouts = batch.extra.get("rollout_id") or [None] * len(batch)
            return [f"rollout:{r}" if r is not None else f"trace:{t}" for r, t in zip(rollouts, batch.trace_id)]
        return batch.trace_id

    def _single_key(self, batch: SpanBatch) -> str | None:
        """The group key when every span of the batch has the same one (an agent's request mostly
        holds one rollout or trace), found from the columns' distinct values, not span by span."""
        if self.config.group_by == "rollout":
            rollouts = distinct(batch.extra.get("rollout_id") or [None])
            if rollouts != {None}:
                return f"rollout:{rollouts.pop()}" if len(rollouts) == 1 and None not in rollouts else None
        traces = distinct(batch.trace_id)
        if len(traces) != 1:
            return None
        trace = traces.pop()
        return f"trace:{trace}" if self.config.group_by == "rollout" else trace

    def _indices_by_key(self, batch: SpanBatch) -> dict[str, Sequence[int]]:
        """The batch's spans by group key (a batch of one key: all of it, as a range)."""
        key = self._single_key(batch)
        if key is not None:
            return {key: range(len(batch))}
        by_key: dict[str, list[int]] = {}
        for i, k in enumerate(self._group_keys(batch)):
            by_key.setdefault(k, []).append(i)
        return by_key  # type: ignore[return-value]

    def _ends_group(self, batch: SpanBatch, idx: Sequence[int]) -> bool:
        """Whether one of these spans ends its group (for the whole batch, names are read once)."""
        if len(idx) == len(batch):
            if distinct(batch.name) & self.end_names:
                return True
            if self.end_condition is None:
                return False
        for i in idx:
            if batch.name[i] in self.end_names:
                return True
            if self.end_condition is not None and self.end_condition(SpanView.of(batch, i)):
                return True
        return False

    def consume(self, batch: SpanBatch) -> None:
        if self.downstream_refusing or self._sending_for() > SENDING_BEHIND_S:
            # What was decided cannot leave (downstream refuses, or holds the sending thread while
            # it is full): taking more would only grow memory, since the writer, not the receivers,
            # sets the pace. The client retries instead.
            raise BackPressureError(f"{self.id}: downstream is not taking what was decided; retry later")
        self.count_in(len(batch))
        by_key = self._indices_by_key(batch)
        late_keep: list[int] = []
        evicted: list[Group] = []
        now = time.monotonic()
        with self._lock:
            for k, idx in by_key.items():
                if k in self.decided:
                    counters.add("processor_tail_sampling_late_span", len(idx), processor=self.id)
                    if self.decided[k]:
                        late_keep.extend(idx)
                    continue
                g = self.groups.get(k)
                if g is None:
                    g = self.groups[k] = Group(k, first_seen=now)
                g.parts.append(batch if len(idx) == len(batch) else batch.take(list(idx)))
                g.spans += len(idx)
                g.last_seen = now
                if g.complete_at is None and self._ends_group(batch, idx):
                    g.complete_at = now + self.config.completion_grace
            while len(self.groups) > self.config.num_traces:
                evicted.append(self.groups.popitem(last=False)[1])
        for g in evicted:
            counters.add("processor_tail_sampling_evicted_groups", 1, processor=self.id)
            self.log.warning("num_traces (%d) exceeded: evicting undecided group %s (%d spans dropped)",
                             self.config.num_traces, g.key, g.spans)
        if late_keep:
            self.next.consume(batch.take(sorted(late_keep)))
            self.count_out(len(late_keep))

    def _decide(self, g: Group) -> bool:
        result = verdict([p.evaluate(g.key, g.parts, g.spans) for p in self.policies])
        keep = result == SAMPLED
        counters.add("processor_tail_sampling_count_traces_sampled", 1, processor=self.id, sampled=str(keep).lower())
        self.decided[g.key] = keep
        while len(self.decided) > 2 * self.config.num_traces:
            self.decided.popitem(last=False)
        return keep

    def _due(self, flush_all: bool) -> list[SpanBatch]:
        now = time.monotonic()
        out = []
        with self._lock:
            ready = [k for k, g in self.groups.items()
                     if flush_all or (g.complete_at is not None and now >= g.complete_at)
                     or now - g.last_seen >= self.config.decision_wait]
            for k in ready:
                g = self.groups.pop(k)
                if self._decide(g):
                    out.append(SpanBatch.concat(g.parts))
        return out

    def _sending_for(self) -> float:
        since = self._sending_since
        return 0.0 if since is None else time.monotonic() - since

    def _send_due(self) -> None:
        self._sending_since = time.monotonic()
        try:
            for b in self._due(flush_all=False):
                self.send_downstream(b)
        finally:
            self._sending_since = None

    def shutdown(self) -> None:
        self._decider.stop()
        for b in self._due(flush_all=True):
            self.send_downstream(b)


factory = Factory("tail_sampling", "processors", TailSamplingConfig,
                  lambda cid, cfg, nxt: TailSamplingProcessor(cid, cfg, nxt))
