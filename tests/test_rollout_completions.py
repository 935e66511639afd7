"""What the duckdb exporter keeps once per span beside `spans`: the completion log
(`rollout_completions`, a row per rollout span) and the reward dimensions — whatever batch a
retried export brings a span back in (alone, or among spans of other time ranges), while the
checks for what is stored read only the batch's start-time range."""

from __future__ import annotations

import os

from spanpipe.spanbatch import KIND_INTERNAL, STATUS_OK, Resource, SpanBatch
from spanpipe.warehouse.schema import ROLLOUT_SPAN
from test_attempt_summaries import exporter

T0 = 1_700_000_000_000_000_000
HOUR = 3600 * 10**9


def rollout(rollout_id: str, start: int, spans: int = 3) -> SpanBatch:
    """A rollout's spans: its rollout span first, then calls, the last a reward with two dimensions."""
    b = SpanBatch(resources=[Resource({"service.name": "test"}, "test")])
    trace = os.urandom(16).hex()
    kinds = ["rollout"] + ["llm"] * (spans - 2) + ["reward"]
    for i, kind in enumerate(kinds):
        b.append_span(trace, os.urandom(8).hex(), None, ROLLOUT_SPAN if kind == "rollout" else "call",
                      KIND_INTERNAL, start + i, start + 10**6, STATUS_OK, "", "test", "", {})
    return b.with_columns(rollout_id=[rollout_id] * spans, attempt_id=[f"at-{rollout_id}"] * spans,
                          span_type=kinds, sequence_id=list(range(1, spans + 1)),
                          reward=[None] * (spans - 1) + [0.5],
                          reward_dimensions=[None] * (spans - 1) + [[{"name": "task", "value": 0.5, "source": "test"},
                                                                       {"name": "style", "value": 1.0, "source": "test"}]])


def test_spans_sent_again_complete_their_rollout_once_and_keep_their_reward_dimensions_once(tmp_path):
    e = exporter(tmp_path / "w.duckdb")
    try:
        first = [rollout(f"ro-{n}", T0 + n * HOUR) for n in range(3)]
        for b in first:
            e.send(b, 5)
        later = rollout("ro-later", T0 + 30 * HOUR)
        e.send(SpanBatch.concat([later, first[0]]), 5)  # retried among newer spans: a wide range
        e.send(first[1].take([0]), 5)  # the rollout span alone again: a one-point range
        e.send(first[2], 5)  # the whole rollout again
        rows = e.db.reader().execute(
            "SELECT rollout_id, count(*), any_value(final_reward) FROM rollout_completions GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert rows == [("ro-0", 1, 0.5), ("ro-1", 1, 0.5), ("ro-2", 1, 0.5), ("ro-later", 1, 0.5)]
        e.send(first[0].take([2]), 5)  # a reward span alone again
        dims = e.db.reader().execute(
            "SELECT s.rollout_id, list(d.name ORDER BY d.idx) FROM reward_dimensions d "
            "JOIN spans s USING (trace_id, span_id) GROUP BY 1 ORDER BY 1").fetchall()
        assert dims == [(r, ["task", "style"]) for r in ("ro-0", "ro-1", "ro-2", "ro-later")]
    finally:
        e.shutdown()
