"""The `rollout` processor: puts `rollout_id`, `attempt_id` and `sequence_id` on every span.

Where the ids come from, first hit wins:
1. span attributes named in `rollout_id_keys` / `attempt_id_keys` / `sequence_id_keys`
   (Agent Lightning's `agentlightning.*` by default; W3C baggage entries arrive as span attributes
   of the same name when the agent runs OTel's BaggageSpanProcessor, so list those keys here too);
2. resource attributes of the same names;
3. the trace: the first span of a trace that carries a rollout id teaches the processor that
   trace → rollout mapping, so untagged spans of the same trace (another service's, an
   instrumentation library's) are tagged too (`propagate_by_trace`, bounded by `max_traces`).

Sequence ids are per rollout, monotonic from 1, issued in arrival order; an id the client gave is
kept and raises the counter (the next issued is max + 1). The counters of the `max_rollouts` most
recently active rollouts are kept, across restarts through `state_file` (sequence_counters.py).

`on_missing`: `keep` (the span is stored without a rollout), `drop`, or `default` (tag it
`default_rollout_id`).

Completion: a rollout is complete when its `agentlightning.rollout` span is stored; one that never
sends it is completed after `idle_timeout` (`idle_completion.py`).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Literal

from pydantic import Field

from spanpipe import events
from spanpipe.component import BatchTransform, Consumer
from spanpipe.component import ComponentConfig
from spanpipe.configtypes import Duration
from spanpipe.errors import PipelineError
from spanpipe.periodic import Periodic
from spanpipe.processors.idle_completion import IdleRollouts
from spanpipe.processors.rollout_ids import ReadRolloutIds
from spanpipe.processors.sequence_counters import SequenceCounters
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters


class RolloutConfig(ComponentConfig):
    rollout_id_keys: list[str] = ["agentlightning.rollout_id"]
    attempt_id_keys: list[str] = ["agentlightning.attempt_id"]
    sequence_id_keys: list[str] = ["agentlightning.span_sequence_id"]
    propagate_by_trace: bool = True
    max_traces: int = Field(100_000, gt=0)
    on_missing: Literal["keep", "drop", "default"] = "keep"
    default_rollout_id: str = "unassigned"
    issue_sequence_ids: bool = True
    state_file: str | None = Field(None, description="where sequence counters are kept across restarts")
    max_rollouts: int = Field(100_000, gt=0, description="rollouts remembered (sequence counters, started, idle "
                              "tracking), the most recently active; a forgotten one's ids continue above every "
                              "id a forgotten one had")
    idle_timeout: Duration = Field("30s", description="complete a rollout that sent no rollout span once a "  # type: ignore[assignment]
                                   "root span of it has arrived and nothing more for this long; 0 = off")

    def validate_config(self) -> None:
        if not self.rollout_id_keys:
            raise ValueError("rollout_id_keys: list at least one key")


class RolloutProcessor(BatchTransform):
    def __init__(self, component_id: str, config: RolloutConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.config = config
        self._derivation = ReadRolloutIds(config.rollout_id_keys, config.attempt_id_keys, config.sequence_id_keys)
        self.by_trace: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self.started: OrderedDict[str, None] = OrderedDict()
        self.counters: SequenceCounters | None = None
        self.idle: IdleRollouts | None = None
        self._ticker: Periodic | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        try:
            self.counters = SequenceCounters(self.config.state_file, self.config.max_rollouts, self.log)
        except OSError as exc:
            raise RuntimeError(f"{self.id}: cannot use state_file {self.config.state_file}: "
                               f"{exc.strerror or exc}") from None
        timeout = self.config.idle_timeout
        if timeout > 0:
            self.idle = IdleRollouts(timeout, self.config.max_rollouts, self.config.rollout_id_keys[0],
                                     self.config.attempt_id_keys[0])
            self._ticker = Periodic(f"{self.id}-idle", min(1.0, timeout / 4), self._complete_idle, self.log)
            self._ticker.start()

    def shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        if self.counters is not None:
            self.counters.close()

    def _complete_idle(self) -> None:
        """Send a rollout span for each rollout idle with its roots ended (idle_completion.py)."""
        assert self.idle is not None
        due = self.idle.due()
        if not due:
            return
        try:
            self.next.consume(self.process(self.idle.completion_batch(due), observe=False))
        except PipelineError as exc:
            self.log.warning("completing %d idle rollout(s) was refused (%s); trying again", len(due), exc)
            return
        self.idle.completed([r for r, _ in due])
        self.log.info("completed %d rollout(s) idle for %.0fs: %s", len(due), self.config.idle_timeout,
                      ", ".join(r for r, _ in due[:5]) + (" …" if len(due) > 5 else ""))

    def _remember(self, first_tagged: dict[str, int], rollouts: list[str | None],
                  attempts: list[str | None]) -> None:
        """Learn trace → (rollout, attempt) from each trace's first tagged span (`first_tagged`:
        trace id → span index); a trace already known keeps its mapping and becomes the newest.
        Set operations and one update, not a call per trace: most spans start a trace of their own.
        The traces of one rollout share one (rollout, attempt) tuple: at `max_traces` a tuple per
        trace was 5 MiB of the collector's memory."""
        known = self.by_trace
        for trace_id in first_tagged.keys() & known.keys():
            known.move_to_end(trace_id)
        pairs: dict[tuple[str | None, str | None], tuple[str | None, str | None]] = {}
        known.update({t: pairs.setdefault(pair := (rollouts[i], attempts[i]), pair)
                      for t, i in first_tagged.items() if t not in known})
        for _ in range(len(known) - self.config.max_traces):
            known.popitem(last=False)

    def derivation(self) -> ReadRolloutIds:
        return self._derivation

    def process(self, batch: SpanBatch, observe: bool = True) -> SpanBatch:
        cfg = self.config
        n = len(batch)
        ids = self._derivation.of(batch)
        # Copies: a batch fanned out to two pipelines carries one derived result for both.
        rollouts, attempts, given_seq, untagged = list(ids.rollouts), list(ids.attempts), ids.given_seq, ids.untagged
        keep = None
        with self._lock:
            if cfg.propagate_by_trace:
                trace_ids = list(batch.trace_id)  # a list: indexing an Arrow column is per-call work
                tagged = [i for i, r in enumerate(rollouts) if r is not None]
                self._remember({trace_ids[i]: i for i in reversed(tagged)}, rollouts, attempts)
                for i in untagged:
                    known = self.by_trace.get(trace_ids[i])
                    if known is not None:
                        rollouts[i], attempts[i] = known
            missing = [i for i in untagged if rollouts[i] is None]
            if missing:
                counters.add("rollout_missing_spans", len(missing), processor=self.id)
                if cfg.on_missing == "default":
                    for i in missing:
                        rollouts[i] = cfg.default_rollout_id
                elif cfg.on_missing == "drop":
                    gone = set(missing)
                    keep = [i for i in range(n) if i not in gone]
            present = [r for r in dict.fromkeys(rollouts) if r is not None]
            seqs = self._sequence(rollouts, given_seq, present) if cfg.issue_sequence_ids else given_seq
            started = []
            for r in present:
                if r not in self.started:
                    self.started[r] = None
                    started.append(r)
                    if len(self.started) > self.config.max_rollouts:
                        self.started.popitem(last=False)
        if observe and self.idle is not None:
            self.idle.observe(batch, rollouts, attempts)
        for r in started:
            events.publish(events.ROLLOUT_STARTED, rollout_id=r, processor=self.id)
        out = batch.with_columns(rollout_id=rollouts, attempt_id=attempts, sequence_id=seqs)
        return out.take(keep) if keep is not None else out

    def _sequence(self, rollouts: list[str | None], given: list[int | None],
                  present: list[str]) -> list[int | None]:
        """Sequence ids for the batch's spans; `present`: its rollouts, each once."""
        kept = self.counters
        assert kept is not None
        last = kept.last(present)
        changed: dict[str, int] = {}
        # Client-given ids first raise the counters, so issued ids never collide with them.
        for r, g in zip(rollouts, given):
            if r is not None and g is not None and g > last[r]:
                last[r] = changed[r] = g
        issue = {r: itertools.count(last[r] + 1) for r in present}
        out = [None if r is None else g if g is not None else next(issue[r]) for r, g in zip(rollouts, given)]
        for r, counter in issue.items():
            highest = next(counter) - 1
            if highest > last[r]:  # some id was issued
                changed[r] = highest
        kept.advance(present, changed)
        return out


factory = Factory("rollout", "processors", RolloutConfig,
                  lambda cid, cfg, nxt: RolloutProcessor(cid, cfg, nxt),
                  adds_columns=("rollout_id", "attempt_id", "sequence_id"))
