"""`attempt_summaries`, which the duckdb exporter keeps as it inserts, must always equal the same
aggregates computed over `spans`: after new spans, after a retried export repeats stored spans,
after retention removes rollouts, and for a file whose spans were written without the exporter."""

from __future__ import annotations

import os
import random
from pathlib import Path

import duckdb

from spanpipe.exporters.duckdb import DuckDBExporter, DuckDBExporterConfig
from spanpipe.semconv.llm_call import INPUT_TOKEN_KEYS, OUTPUT_TOKEN_KEYS
from spanpipe.spanbatch import KIND_INTERNAL, STATUS_OK, Resource, SpanBatch
from spanpipe.warehouse.database import WarehouseDatabase
from spanpipe.warehouse.schema import ATTEMPT_SUMMARIES_KEPT, TOKENS_IN_SQL, TOKENS_OUT_SQL

T0 = 1_700_000_000_000_000_000

# What the summary must hold, from `spans` itself; NULL-safe so rows compare with `=`.
EXPECTED = f"""
SELECT rollout_id, COALESCE(attempt_id, '') AS attempt_key, min(start_time_unix_nano) AS start_ns,
       max(end_time_unix_nano) AS last_ns, count(*) AS spans, count(*) FILTER (WHERE span_type = 'llm') AS llm_calls,
       sum({TOKENS_IN_SQL}) FILTER (WHERE span_type = 'llm') AS input_tokens,
       sum({TOKENS_OUT_SQL}) FILTER (WHERE span_type = 'llm') AS output_tokens,
       arg_max(reward, (sequence_id, start_time_unix_nano)) FILTER (WHERE span_type = 'reward') AS final_reward,
       arg_max(attributes->>'spanpipe.model_version', start_time_unix_nano) FILTER (WHERE span_type = 'llm') AS model_version
FROM spans WHERE rollout_id IS NOT NULL GROUP BY ALL ORDER BY ALL"""
KEPT = """
SELECT rollout_id, attempt_key, start_time_unix_nano, last_span_time_unix_nano, spans, llm_calls, input_tokens,
       output_tokens, final_reward, model_version FROM attempt_summaries ORDER BY ALL"""


def random_batches(rng: random.Random, rollouts: int, per_batch: int) -> list[SpanBatch]:
    """Spans of `rollouts` rollouts (some attempts unnamed, some sequence ids missing) spread over
    batches in a random order, so one rollout's spans arrive in several batches."""
    spans = []
    for r in range(rollouts):
        for a in range(rng.randint(1, 3)):
            attempt = None if a == 0 and r % 4 == 0 else f"at-{r}-{a}"
            for k in range(rng.randint(1, 12)):
                kind = rng.choice(["llm", "llm", "reward", "tool"])
                attrs = {}
                if kind == "llm":
                    # every convention's usage keys, sometimes two of them on one span (the first wins)
                    attrs = {rng.choice(INPUT_TOKEN_KEYS): rng.randint(1, 500), "spanpipe.model_version": f"v{k}"}
                    if rng.random() < 0.7:
                        attrs[rng.choice(OUTPUT_TOKEN_KEYS)] = rng.randint(1, 100)
                    if rng.random() < 0.2:
                        attrs[rng.choice(OUTPUT_TOKEN_KEYS)] = str(rng.randint(1, 100))
                start = T0 + rng.randrange(10**12)
                spans.append((f"ro-{r}", attempt, kind, attrs, start, rng.choice([None, k]),
                              rng.random() if kind == "reward" else None))
    rng.shuffle(spans)
    batches = []
    for i in range(0, len(spans), per_batch):
        b = SpanBatch(resources=[Resource({"service.name": "test"}, "test")])
        chunk = spans[i:i + per_batch]
        for rid, _, _, attrs, start, _, _ in chunk:
            b.append_span(os.urandom(16).hex(), os.urandom(8).hex(), None, "call", KIND_INTERNAL, start,
                          start + 10**6, STATUS_OK, "", "test", "", attrs)
        batches.append(b.with_columns(rollout_id=[s[0] for s in chunk], attempt_id=[s[1] for s in chunk],
                                      span_type=[s[2] for s in chunk], sequence_id=[s[5] for s in chunk],
                                      reward=[s[6] for s in chunk]))
    return batches


def exporter(path: Path, **config: object) -> DuckDBExporter:
    e = DuckDBExporter("duckdb", DuckDBExporterConfig.model_validate({"path": str(path), "query": {"enabled": False}, **config}))
    e.start()
    return e


def summaries_match(con: duckdb.DuckDBPyConnection) -> None:
    expected, kept = con.execute(EXPECTED).fetchall(), con.execute(KEPT).fetchall()
    assert expected, "the test wrote no rollout spans"
    assert kept == expected


def test_summaries_follow_inserts_retried_exports_and_retention(tmp_path):
    rng = random.Random(7)
    batches = random_batches(rng, rollouts=40, per_batch=37)
    e = exporter(tmp_path / "w.duckdb", retention={"max_rows": 120, "check_interval": "1h"})
    try:
        for b in batches:
            e.send(b, 5)
        summaries_match(e.db.reader())
        for b in rng.sample(batches, 4):  # retried exports: every span already stored
            e.send(b, 5)
        mixed = SpanBatch.concat([batches[0], random_batches(rng, rollouts=3, per_batch=100)[0]])
        e.send(mixed, 5)  # a batch half repeated, half new
        e.send(SpanBatch.concat([batches[1], batches[1]]), 5)  # repeated within one batch
        fresh = random_batches(rng, rollouts=2, per_batch=30)[0]
        e.send(SpanBatch.concat([fresh, fresh.take([3, 1]), fresh]), 5)  # new spans, repeated within one batch
        summaries_match(e.db.reader())
        stored, distinct = e.db.reader().execute(
            "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchone()
        assert stored == distinct
        removed = e.apply_retention()
        assert removed[0] > 0
        summaries_match(e.db.reader())
    finally:
        e.shutdown()


def test_a_file_written_without_the_exporter_gets_its_summaries_built_when_opened(tmp_path):
    path = tmp_path / "w.duckdb"
    e = exporter(path)
    try:
        for b in random_batches(random.Random(3), rollouts=10, per_batch=50):
            e.send(b, 5)
    finally:
        e.shutdown()
    with duckdb.connect(str(path)) as con:  # a copy made by hand, the way bench/ builds big files
        con.execute("INSERT INTO spans SELECT * REPLACE ('copy-' || rollout_id AS rollout_id) FROM spans")
        con.execute("DELETE FROM spanpipe_meta WHERE key = $k", {"k": ATTEMPT_SUMMARIES_KEPT})
    db = WarehouseDatabase(path, {}, "test")
    db.open()
    try:
        summaries_match(db.reader())
        assert db.reader().execute("SELECT count(*) FROM attempt_summaries WHERE rollout_id LIKE 'copy-%'").fetchall()[0][0] > 0
    finally:
        db.close()
