"""Triplet extraction speed: 1,000,000 stored spans in 10,000 rollouts, and one flat 10,000-span
trace; optionally side by side with Agent Lightning 0.3's TracerTraceToTriplet on the same spans.

    .venv/bin/python bench/triplets.py                       # ours
    .venv/bin/python bench/triplets.py --agl .venv-compat/bin/python --agl-rollouts 500

The warehouse is written directly (the same `spans` table the collector writes), so this measures
the read side only. Each rollout: a rollout span, an agent span, 12 LLM calls (messages, token
ids, usage), 12 rewards, 74 tool/other spans.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spanpipe.adapters.span_columns import spans_to_columns  # noqa: E402
from spanpipe.adapters.triplets import TripletAdapter  # noqa: E402
from spanpipe.exporters.duckdb import DuckDBExporterConfig  # noqa: E402
from spanpipe.warehouse.schema import SPANS_COLUMNS  # noqa: E402
from spanpipe.warehouse.writer import create_warehouse, insert_spans  # noqa: E402
from spanpipe.warehouse.warehouse import Warehouse  # noqa: E402

BASE = 1_750_000_000 * 10**9


def llm_attrs(r: int, k: int) -> dict:
    return {"gen_ai.system": "openai", "gen_ai.request.model": "qwen2.5-7b", "gen_ai.response.id": f"resp-{r}-{k}",
            "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "You are a careful agent. " * 4,
            "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": f"Step {k} of task {r}: " + "x" * 120,
            "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "Thinking... " * 8,
            "gen_ai.usage.prompt_tokens": 64, "gen_ai.usage.completion_tokens": 32,
            "prompt_token_ids": list(range(1000 + k, 1064 + k)), "response_token_ids": list(range(2000, 2032))}


def rollout_rows(r: int, n_llm: int = 12, n_other: int = 74, flat: bool = False) -> list[tuple]:
    """(span_id, parent, name, start, end, attributes, span_type, reward) of one rollout."""
    t0 = BASE + r * 10**10
    rows = [(f"{r:08x}00000001", None, "agentlightning.rollout", t0, t0 + 10**9, {}, "rollout", None)]
    parent = f"{r:08x}00000001"
    if not flat:
        rows.append((f"{r:08x}00000002", parent, "agent.run", t0 + 1, t0 + 10**9 - 1, {"agent.name": "solver"},
                     "agent", None))
        parent = f"{r:08x}00000002"
    sid, t = 3, t0 + 1000
    others_per_step = n_other // n_llm
    for k in range(n_llm):
        rows.append((f"{r:08x}{sid:08x}", parent, "openai.chat.completion", t, t + 1000, llm_attrs(r, k), "llm", None))
        sid, t = sid + 1, t + 1100
        for _ in range(others_per_step):
            rows.append((f"{r:08x}{sid:08x}", parent, "tool.call", t, t + 100, {"tool.name": "search"}, "tool", None))
            sid, t = sid + 1, t + 150
        v = float(k % 2)
        rows.append((f"{r:08x}{sid:08x}", parent, "agentlightning.annotation", t, t + 1,
                     {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": v}, "reward", v))
        sid, t = sid + 1, t + 10
    while len(rows) < 2 + n_llm * (others_per_step + 2) + (n_other - others_per_step * n_llm):
        rows.append((f"{r:08x}{sid:08x}", parent, "tool.call", t, t + 100, {}, "tool", None))
        sid, t = sid + 1, t + 150
    return rows


def write_warehouse(path: Path, rollouts: int, flat_spans: int, row_group_size: int) -> int:
    con = create_warehouse(str(path), row_group_size)
    total = 0
    chunk = 500
    names = [c for c, _ in SPANS_COLUMNS]
    for lo in range(0, rollouts, chunk):
        cols: dict[str, list] = {c: [] for c in names}
        for r in range(lo, min(lo + chunk, rollouts)):
            for seq, (sid, parent, name, s, e, attrs, kind, reward) in enumerate(rollout_rows(r), 1):
                _append(cols, r, seq, sid, parent, name, s, e, attrs, kind, reward)
        total += _insert(con, cols)
    if flat_spans:
        r = rollouts
        cols = {c: [] for c in names}
        n_llm = flat_spans // 8
        for seq, row in enumerate(rollout_rows(r, n_llm=n_llm, n_other=flat_spans - 2 * n_llm - 1, flat=True), 1):
            _append(cols, r, seq, *row)
        total += _insert(con, cols)
    con.execute("""INSERT INTO rollout_completions SELECT nextval('rollout_completion_seq'), rollout_id, attempt_id,
                   trace_id, span_id, 'succeeded', 'train', NULL, start_time_unix_nano, end_time_unix_nano
                   FROM spans WHERE name = 'agentlightning.rollout' ORDER BY rollout_id""")
    con.execute("CHECKPOINT")
    con.close()
    return total


def _append(cols: dict, r: int, seq: int, sid: str, parent: str | None, name: str, s: int, e: int, attrs: dict,
            kind: str, reward: float | None) -> None:
    row = {"trace_id": f"{r:032x}", "span_id": sid, "parent_span_id": parent, "trace_state": None, "name": name,
           "kind": "INTERNAL", "start_time_unix_nano": s, "end_time_unix_nano": e, "duration_ns": e - s,
           "status_code": "OK", "status_message": None, "service_name": "bench-agent", "scope_name": "bench",
           "scope_version": None, "attributes": orjson.dumps(attrs).decode(), "resource_attributes": "{}",
           "events": "[]", "links": "[]", "rollout_id": f"ro-{r:05d}", "attempt_id": "at-1", "sequence_id": seq,
           "span_type": kind, "reward": reward, "response_id": attrs.get("gen_ai.response.id")}
    for c, v in row.items():
        cols[c].append(v)


def _insert(con: duckdb.DuckDBPyConnection, cols: dict) -> int:
    return insert_spans(con, pa.table(cols))


def best_of(n: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rollouts", type=int, default=10_000)
    p.add_argument("--flat-spans", type=int, default=10_000)
    p.add_argument("--db", help="reuse/keep the warehouse here (default: a temp dir)")
    p.add_argument("--row-group-size", type=int, default=DuckDBExporterConfig().row_group_size,
                   help="rows per row group of a new warehouse (default: the duckdb exporter's)")
    p.add_argument("--agl", help="python of a venv with agentlightning==0.3.0 (e.g. .venv-compat/bin/python)")
    p.add_argument("--agl-rollouts", type=int, default=200, help="rollouts to time Agent Lightning on")
    p.add_argument("--agl-flat-spans", type=int, default=2_000)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="spanpipe-bench-")
    db = Path(args.db) if args.db else Path(tmp) / "spans.duckdb"
    if not db.exists():
        t0 = time.perf_counter()
        n = write_warehouse(db, args.rollouts, args.flat_spans, args.row_group_size)
        print(f"wrote {n:,} spans ({args.rollouts:,} rollouts + one flat {args.flat_spans:,}-span trace) "
              f"in {time.perf_counter() - t0:.1f}s to {db}")
    with Warehouse.open(db) as wh:
        ids = [f"ro-{r:05d}" for r in range(args.rollouts)]
        secs, res = best_of(3, lambda: wh.triplets(ids))
        print(f"ours: {len(res):,} triplets from {args.rollouts:,} rollouts "
              f"({args.rollouts * 100:,} spans) in {secs:.2f}s (best of 3); reasons: {len(res.reasons)}")
        secs_o, n_obj = best_of(1, lambda: len(list(wh.triplets(ids))))
        print(f"ours: the same, every triplet made a Python object (prompt/response/metadata dicts): {secs_o:.2f}s")
        secs_c, res_c = best_of(3, lambda: wh.triplets(since=0))
        print(f"ours: same through the completion cursor (since=0): {len(res_c):,} triplets in {secs_c:.2f}s")
        secs_r, res_r = best_of(1, lambda: wh.triplets(ids, bulk=False))
        print(f"ours, reference path only (one rollout at a time through tree.Tree, bulk=False): "
              f"{len(res_r):,} triplets in {secs_r:.2f}s")
        flat_id = f"ro-{args.rollouts:05d}"
        secs_f, res_f = best_of(3, lambda: wh.triplets([flat_id]))
        print(f"ours: flat {args.flat_spans:,}-span trace: {len(res_f):,} triplets in {secs_f * 1000:.0f} ms "
              "(best of 3, warehouse read included)")
        flat_rows = wh.sql(f"SELECT span_id, parent_span_id, name, start_time_unix_nano, end_time_unix_nano, "
                           f"attributes, span_type, reward, sequence_id FROM spans WHERE rollout_id = '{flat_id}' "
                           "ORDER BY sequence_id").to_pylist()
    adapter = TripletAdapter()
    cols = spans_to_columns(flat_rows, adapter)
    secs_a, _ = best_of(3, lambda: adapter.adapt_columns(cols))
    print(f"ours: flat trace, adapter only (spans in memory): {secs_a * 1000:.0f} ms")
    if args.agl:
        agl_script = Path(__file__).with_name("triplets_agl.py")
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        out = subprocess.run([args.agl, str(agl_script), str(db), str(args.agl_rollouts), str(args.agl_flat_spans)],
                             capture_output=True, text=True, env=env, timeout=3600)
        if out.returncode != 0:
            print("agentlightning run failed:", out.stderr[-2000:])
            return
        agl = json.loads(out.stdout.strip().splitlines()[-1])
        with Warehouse.open(db) as wh:
            sub = ids[: args.agl_rollouts]
            ours_sub, res_sub = best_of(3, lambda: wh.triplets(sub))
        per_ours = ours_sub / len(sub)
        per_agl = agl["rollouts_seconds"] / agl["rollouts"]
        print(f"agentlightning 0.3: {agl['triplets']:,} triplets from {agl['rollouts']:,} rollouts in "
              f"{agl['rollouts_seconds']:.2f}s (adapter only, spans already in memory); ours on the same "
              f"{len(sub):,} rollouts incl. warehouse read: {ours_sub:.2f}s -> {per_agl / per_ours:.1f}x faster")
        with Warehouse.open(db) as wh:
            flat_small = wh.sql(f"SELECT * FROM spans WHERE rollout_id = '{flat_id}' ORDER BY sequence_id "
                                f"LIMIT {args.agl_flat_spans}").to_pylist()
        cols_small = spans_to_columns(flat_small, adapter)
        ours_small, _ = best_of(3, lambda: adapter.adapt_columns(cols_small))
        print(f"flat trace of {args.agl_flat_spans:,} spans, adapter only: agentlightning "
              f"{agl['flat_seconds'] * 1000:.0f} ms, ours {ours_small * 1000:.1f} ms -> "
              f"{agl['flat_seconds'] / ours_small:.0f}x faster")


if __name__ == "__main__":
    main()
