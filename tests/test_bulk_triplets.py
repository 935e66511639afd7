"""The bulk path (NumPy decisions over many rollouts, stored payloads) gives exactly the triplets
of the reference path (one rollout at a time through tree.Tree), on random rollouts of every shape:
well-formed ones the bulk path decides, malformed ones it must hand over."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from spanpipe.adapters import bulk
from spanpipe.adapters.bulk import bulk_triplets, stored_payloads_sql
from spanpipe.adapters.span_columns import spans_to_columns
from spanpipe.adapters.triplets import TripletAdapter
from spanpipe.warehouse.warehouse import Warehouse
from spanpipe.warehouse.writer import create_warehouse, insert_spans
from tests.triplet_cases import BASE_NS, llm, reward

OPTIONS: list[dict[str, Any]] = [
    {}, {"agent_match": "^a$"}, {"reward_match": "first_sibling"}, {"exclude_llm_call_in_reward": False},
    {"repair_hierarchy": False}, {"dedup_llm_call": False}, {"skip_empty_token_spans": True},
    {"llm_call_match": r"^chat ", "llm_conventions": False},
]


def random_rollout(rng: random.Random, r: int, malformed: bool) -> list[dict[str, Any]]:
    """A rollout's spans: nested agents, LLM calls (some sharing response ids, some without token
    ids), reward spans (a few wrapping calls), tools; children one after another inside their
    parent's time. Malformed: a missing parent, a second root, overlapping siblings, or a span id
    used twice (by a span of another trace)."""
    n = rng.randint(2, 30)
    kinds = ["agent"] + [rng.choice(["llm", "llm", "llm", "reward", "agent", "tool", "tool", "op_reward"])
                         for _ in range(n - 1)]
    parents: list[int | None] = [None]
    for i in range(1, n):
        hosts = [j for j in range(i) if kinds[j] in ("agent", "llm") or rng.random() < 0.1] or [0]
        parents.append(rng.choice(hosts))
    times: list[tuple[int, int]] = [(0, 0)] * n

    def place(i: int, lo: int, hi: int) -> None:
        times[i] = (lo, hi)
        kids = [c for c in range(n) if parents[c] == i]
        if kids:
            slot = (hi - lo) // (len(kids) + 1)
            for k, c in enumerate(kids):
                place(c, lo + k * slot + rng.choice([0, 1]), lo + (k + 1) * slot)  # 0: starts as the last ends

    place(0, 0, 10**9)
    spans: list[dict[str, Any]] = []
    for i, kind in enumerate(kinds):
        name, attrs = {
            "llm": (rng.choice(["openai.chat.completion", "chat qwen"]),
                    llm(i, rid=rng.choice([None, f"r{rng.randrange(4)}", f"u{r}-{i}"]), tokens=rng.random() < 0.8)),
            "reward": ("agentlightning.annotation", reward(round(rng.random(), 3))),
            "agent": ("agent.run", {"agent.name": rng.choice(["a", "b"])}),
            "tool": (f"tool.{rng.choice(['calc', 'search'])}", {"tool.name": "calc"}),
            "op_reward": ("agentlightning.operation", {"agentlightning.operation.name": "agentlightning.reward"}),
        }[kind]
        spans.append({"span_id": f"{r:08x}{i + 1:08x}", "parent": parents[i], "name": name, "attributes": attrs,
                      "_lo": times[i][0], "_hi": times[i][1]})
    if malformed and n > 2:
        victim = spans[rng.randrange(1, n)]
        trouble = rng.choice(["missing", "second_root", "overlap", "same_id"])
        if trouble == "same_id":
            victim["span_id"], victim["_trace"] = spans[rng.randrange(0, n)]["span_id"], f"{r + 1:031x}f"
        elif trouble == "missing":
            victim["parent"] = -1
        elif trouble == "second_root":
            victim["parent"] = None
        else:
            victim["_lo"], victim["_hi"] = 0, spans[0]["_hi"] - 1
    out = []
    for seq, sp in enumerate(spans, 1):
        parent = sp["parent"]
        parent_id = None if parent is None else ("ffffffffffffffff" if parent == -1 else spans[parent]["span_id"])
        out.append({"trace_id": sp.get("_trace", f"{r:032x}"), "span_id": sp["span_id"], "parent_span_id": parent_id,
                    "name": sp["name"], "attributes": sp["attributes"], "sequence_id": seq,
                    "start_time_unix_nano": BASE_NS + sp["_lo"], "end_time_unix_nano": BASE_NS + sp["_hi"]})
    return out


def write(path: Path, rollouts: dict[str, list[dict[str, Any]]], some_without_response_id: bool = True) -> None:
    """The rollouts as the collector would store them (span types and rewards classified); a span's
    `attempt_id` key names its attempt (default at-1)."""
    rows: dict[str, list[Any]] = {c: [] for c in ("trace_id", "span_id", "parent_span_id", "name",
                                                 "start_time_unix_nano", "end_time_unix_nano", "attributes",
                                                 "events", "rollout_id", "attempt_id", "sequence_id",
                                                 "span_type", "reward", "response_id")}
    for n, (rid, spans) in enumerate(rollouts.items()):
        cols = spans_to_columns(spans, TripletAdapter())
        for i, sp in enumerate(spans):
            for key in ("trace_id", "span_id", "parent_span_id", "name", "start_time_unix_nano",
                        "end_time_unix_nano", "sequence_id"):
                rows[key].append(sp[key])
            rows["attributes"].append(cols.attributes[i])
            rows["events"].append("[]")
            rows["rollout_id"].append(rid)
            rows["attempt_id"].append(sp.get("attempt_id", "at-1"))
            rows["span_type"].append(cols.span_type[i])
            rows["reward"].append(cols.reward[i])
            # Half the rollouts as if written without the reward processor (no response_id column).
            rows["response_id"].append(cols.response_id[i] if n % 2 or not some_without_response_id else None)
    con = create_warehouse(str(path))
    insert_spans(con, pa.table(rows))
    con.close()


def comparable(triplets: Any) -> list[tuple[Any, ...]]:
    return [(t.rollout_id, t.span_id, t.reward, t.prompt, t.response, t.metadata, t.sequence_id) for t in triplets]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, dict[str, Any]]:
    rng = random.Random(4)
    rollouts = {f"ro-{r:04d}": random_rollout(rng, r, malformed=r % 5 == 0) for r in range(400)}
    path = tmp_path_factory.mktemp("bulk") / "spans.duckdb"
    write(path, rollouts)
    return Warehouse.open(path), rollouts


def test_warehouse_reference_equals_in_memory_adapter(warehouse: tuple[Warehouse, dict[str, Any]]) -> None:
    """The SQL both paths share (response ids from the column or the attributes, agent names
    from a regex-filtered parse) agrees with the pure-Python adapter on the same spans."""
    wh, rollouts = warehouse
    for rid in list(rollouts)[:120]:
        stored = [(t.span_id, t.reward, t.prompt, t.response, t.metadata)
                  for t in TripletAdapter(wh, bulk=False).triplets([rid])]
        assert stored == [(t.span_id, t.reward, t.prompt, t.response, t.metadata)
                          for t in TripletAdapter().adapt(rollouts[rid])], rid


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_bulk_equals_reference_on_random_rollouts(warehouse: tuple[Warehouse, dict[str, Any]],
                                                  options: dict[str, Any]) -> None:
    wh, ids = warehouse[0], list(warehouse[1])
    bulk = TripletAdapter(wh, **options).triplets(ids)
    reference = TripletAdapter(wh, bulk=False, **options).triplets(ids)
    assert comparable(bulk) == comparable(reference)
    assert bulk.reasons == reference.reasons
    assert bulk.to_arrow().equals(reference.to_arrow())
    # Both paths were exercised: most well-formed rollouts in bulk, every malformed one handed over.
    decided = {ids[k] for k in bulk_triplets(TripletAdapter(wh, **options), ids).decided}
    with_triplets = {t.rollout_id for t in reference}
    assert len(decided) >= 0.5 * len(with_triplets) > 0
    handed_over = with_triplets - decided
    assert handed_over and not decided & {r for i, r in enumerate(ids) if i % 5 == 0 and not _well_formed(wh, r)}


def _well_formed(wh: Warehouse, rollout_id: str) -> bool:
    spans = wh.sql(f"SELECT span_id, parent_span_id FROM spans WHERE rollout_id = '{rollout_id}'").to_pylist()
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if s["parent_span_id"] is None]
    return len(roots) == 1 and all(s["parent_span_id"] in ids for s in spans if s["parent_span_id"] is not None)


def test_without_stored_payloads_the_same_triplets(tmp_path: Path, warehouse: tuple[Warehouse, dict[str, Any]],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A file written before payloads were stored (or a lake): every payload is computed on read."""
    wh, ids = warehouse[0], list(warehouse[1])
    expected = TripletAdapter(wh).triplets(ids)
    stored = wh.sql("SELECT count(*) AS n FROM triplet_payloads").column("n")[0].as_py()
    # The bulk path reads them on a second cursor: it must find every one (not fall back to computing).
    assert wh.sql_in_background(stored_payloads_sql(ids)).result().num_rows == stored > 0
    path = tmp_path / "old.duckdb"
    con = create_warehouse(str(path))
    con.execute("DROP TABLE triplet_payloads")
    con.register("__old", wh.sql("SELECT * FROM spans"))
    con.execute("INSERT INTO spans SELECT * FROM __old")
    con.close()
    with Warehouse.open(path) as old:
        got = old.triplets(ids)
    assert comparable(got) == comparable(expected) and len(got) > 100
    # The spans are read back a few ids per statement (a statement stays small), same result.
    monkeypatch.setattr(bulk, "_PAIRS_PER_QUERY", 7, raising=False)
    with Warehouse.open(path) as old:
        statements: list[str] = []
        sql = old.sql
        monkeypatch.setattr(old, "sql", lambda q, *a, **k: statements.append(q) or sql(q, *a, **k))
        assert comparable(old.triplets(ids)) == comparable(expected)
    by_pairs = [q for q in statements if "generate_subscripts" in q]
    assert len(by_pairs) > 10 and all(q.count('["') - 1 <= 7 for q in by_pairs)  # ids, then the type


def _drain_when_idle(indexer: Any, busy: Any) -> None:
    """The writer goes idle: the indexer works its backlog off (within 10 s), then stops."""
    import time

    busy.clear()
    deadline = time.monotonic() + 10
    while indexer.pending():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    indexer.stop()


def test_payload_indexer_works_in_idle_time_and_bounds_its_backlog(warehouse: tuple[Warehouse, dict[str, Any]]) -> None:
    import threading
    import time

    from spanpipe.warehouse.payloads import PayloadIndexer

    wh, ids = warehouse[0], list(warehouse[1])
    spans = wh.sql(f"SELECT * EXCLUDE (attributes, events), attributes::VARCHAR AS attributes, "
                   f"events::VARCHAR AS events FROM spans WHERE rollout_id IN ('{ids[1]}', '{ids[2]}', '{ids[3]}')")
    llm = wh.sql(f"SELECT count(*) AS n FROM triplet_payloads WHERE rollout_id IN ('{ids[1]}', '{ids[2]}', '{ids[3]}')"
                 ).column("n")[0].as_py()
    busy = threading.Event()
    busy.set()
    written: list[pa.Table] = []
    indexer = PayloadIndexer("test", busy.is_set, written.append, max_rows=llm)
    for _ in range(3):  # three times the backlog it may hold, while the writer is busy
        indexer.submit(spans)
    time.sleep(0.2)
    assert written == [] and indexer.pending() == llm and indexer.skipped == 2 * llm
    _drain_when_idle(indexer, busy)
    assert sum(t.num_rows for t in written) == llm > 0
    assert set(written[0].column("span_id").to_pylist()) == set(wh.sql(
        f"SELECT span_id FROM triplet_payloads WHERE rollout_id IN ('{ids[1]}', '{ids[2]}', '{ids[3]}')").column(
        "span_id").to_pylist())


def test_attempts_come_in_the_order_they_started_on_both_paths(tmp_path: Path) -> None:
    """Two and three attempts per rollout, ids named against their start order (`at-z` first):
    `attempts="all"` lists them by attempt start on the bulk and the reference path alike."""
    rng = random.Random(11)
    rows: dict[str, list[dict[str, Any]]] = {}
    starts: dict[str, list[str]] = {}
    for r in range(60):
        names = ["at-z", "at-m", "at-a"][: 2 + r % 2]
        starts[f"ro-{r:04d}"] = names
        for j, attempt in enumerate(names):
            for sp in random_rollout(rng, r * 10 + j, malformed=False):
                sp["start_time_unix_nano"] += j * 10**10
                sp["end_time_unix_nano"] += j * 10**10
                rows.setdefault(f"ro-{r:04d}", []).append({**sp, "attempt_id": attempt})
    path = tmp_path / "attempts.duckdb"
    write(path, rows, some_without_response_id=False)
    with Warehouse.open(path) as wh:
        ids = list(rows)
        bulk = TripletAdapter(wh, attempts="all").triplets(ids)
        reference = TripletAdapter(wh, attempts="all", bulk=False).triplets(ids)
        latest = TripletAdapter(wh).triplets(ids)
    assert comparable(bulk) == comparable(reference) and bulk.to_arrow().equals(reference.to_arrow())
    seen: dict[str, list[str]] = {}
    for t in bulk:
        if not seen.get(t.rollout_id) or seen[t.rollout_id][-1] != t.attempt_id:
            seen.setdefault(t.rollout_id, []).append(t.attempt_id)
    assert sum(len(v) for v in seen.values()) > 100  # most attempts gave triplets
    for rid, order in seen.items():
        assert order == [a for a in starts[rid] if a in order], rid  # by start, not by name or hash
    assert {t.attempt_id for t in latest if t.rollout_id in seen} <= {"at-m", "at-a"}
    assert {(t.rollout_id, t.attempt_id) for t in latest} == \
        {(rid, starts[rid][-1]) for rid in {t.rollout_id for t in latest}}  # latest = last to start


def test_through_a_collector_stored_payloads_are_read_a_few_rollouts_per_statement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collector answers one statement with at most max_result_size_mib: a big pull's stored
    payloads are read in parts, not given up on and computed again from every span."""
    from tests.collector import Collector, wait_for
    from tests.test_read_api import run_agent

    ids = [f"ro-{n}" for n in range(1, 6)]
    with Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}}) as c:
        run_agent(c, ids)
        wh = Warehouse.connect(c.query_url)
        wait_for(lambda: wh.sql("SELECT count(*) AS n FROM triplet_payloads").column("n")[0].as_py() == 10, 20,
                 "the payload indexer")
        monkeypatch.setattr(bulk, "ROLLOUTS_PER_REMOTE_READ", 2, raising=False)
        reads: list[str] = []
        background = wh.sql_in_background
        monkeypatch.setattr(wh, "sql_in_background", lambda q: reads.append(q) or background(q))
        computed: list[Any] = []
        pairs = bulk._pairs_sql
        monkeypatch.setattr(bulk, "_pairs_sql", lambda p: computed.append(p) or pairs(p))
        selections: list[str] = []
        sql = wh.sql
        monkeypatch.setattr(wh, "sql", lambda q: selections.append(q) or sql(q))
        got = wh.triplets(ids)
        assert len([q for q in reads if "FROM triplet_payloads" in q]) == 3 and computed == []
        # the query API serves the derived column and row ids: the selection reads no attributes
        assert [q for q in selections if "attempt_rank" in q and "s.agent_name AS agent" in q]
        assert not [q for q in selections if "regexp_matches(attributes" in q]
        assert c.stop() == 0
    with Warehouse.open(c.db) as file:
        expected = file.triplets(ids)
    assert comparable(got) == comparable(expected) and len(got) == 10
    assert all(t.prompt["token_ids"] for t in got)


@pytest.mark.parametrize("stored", ["as the writer stores it now", "by an older writer, as BIGINT"])
def test_a_token_id_beyond_32_bits_costs_that_call_its_ids_and_nothing_else(tmp_path: Path, stored: str) -> None:
    """Triplets carry int32 token ids; one span with an id that does not fit once failed every
    pull it was part of. Now that call has no token ids (and says why), the others are intact."""
    import duckdb

    def rollout(r: int, bad: bool) -> list[dict[str, Any]]:
        spans = [{"span_id": f"{r:08x}00000001", "parent": None, "name": "agent.run", "attributes": {"agent.name": "a"}}]
        for i in (2, 3):
            attrs = llm(i, rid=f"r{r}-{i}")
            if bad and i == 3:
                attrs["prompt_token_ids"] = [1, 2**40]
            spans.append({"span_id": f"{r:08x}0000000{i}", "parent": f"{r:08x}00000001", "name": "openai.chat.completion",
                          "attributes": attrs})
        return [{"trace_id": f"{r:032x}", "span_id": sp["span_id"], "parent_span_id": sp["parent"], "name": sp["name"],
                 "attributes": sp["attributes"], "sequence_id": k, "start_time_unix_nano": BASE_NS + k * 10,
                 "end_time_unix_nano": BASE_NS + (100 if k == 0 else k * 10 + 5)} for k, sp in enumerate(spans)]

    db = tmp_path / "spans.duckdb"
    write(db, {"ro-good": rollout(1, False), "ro-bad": rollout(2, True)})
    if stored.startswith("by an older writer"):
        con = duckdb.connect(str(db))
        con.execute("ALTER TABLE triplet_payloads ALTER COLUMN prompt_token_ids TYPE BIGINT[]")
        con.execute("UPDATE triplet_payloads SET prompt_token_ids = [1, 1099511627776] WHERE span_id = '0000000200000003'")
        con.close()
    with Warehouse.open(db) as wh:
        triplets = {t.span_id: t for t in wh.triplets(["ro-good", "ro-bad"])}
        result = wh.trajectories(["ro-good", "ro-bad"])
    assert len(triplets) == 4
    bad = triplets["0000000200000003"]
    assert bad.prompt["token_ids"] == [] and bad.response["token_ids"] == []
    if stored.startswith("as the writer"):
        assert bad.metadata["token_ids_missing_reason"].startswith("token_ids_out_of_range")
    assert triplets["0000000200000002"].prompt["token_ids"] == [102, 103, 104]
    assert triplets["0000000100000003"].prompt["token_ids"] == [103, 104, 105]
    assert {"rollout_id": "ro-bad", "attempt_id": "at-1", "span_id": "0000000200000003", "reason": "no_token_ids",
            "position": None} in result.breaks.to_pylist()
    assert sorted(result.table.column("rollout_id").to_pylist()) == ["ro-bad", "ro-good", "ro-good"]


def test_a_file_from_before_the_derived_columns_gets_them_when_a_writer_opens_it(
        tmp_path: Path, warehouse: tuple[Warehouse, dict[str, Any]]) -> None:
    """A file whose `spans` lacks `agent_name`: read-only it is read through the attributes; the
    collector's (or the writer's) open adds the column, filled for every stored span, and the
    selection then reads the column — the same triplets either way."""
    from spanpipe import columns
    from spanpipe.semconv.agents import agent_name_of_json_sql
    from spanpipe.warehouse.views import Shapes

    wh, ids = warehouse[0], list(warehouse[1])
    expected = comparable(TripletAdapter(wh).triplets(ids))
    path = tmp_path / "before.duckdb"
    con = create_warehouse(str(path))
    con.execute("DROP TABLE spans")
    con.execute(columns.create_table_sql("spans", columns.SPANS))
    con.register("__old", wh.sql("SELECT * EXCLUDE (agent_name) FROM spans"))
    con.execute("INSERT INTO spans SELECT * FROM __old")
    con.close()
    everything = "rollout_id IS NOT NULL"
    with Warehouse.open(path) as old:
        assert not Shapes.of(old, everything).derived
        assert comparable(old.triplets(ids)) == expected
    create_warehouse(str(path)).close()
    with Warehouse.open(path) as migrated:
        assert Shapes.of(migrated, everything).derived
        names = migrated.sql(f"SELECT count(*) FILTER (WHERE agent_name IS NOT DISTINCT FROM "
                             f"({agent_name_of_json_sql()})) AS same, count(agent_name) AS named, count(*) AS n "
                             "FROM spans").to_pylist()[0]
        assert names["same"] == names["n"] and names["named"] > 100
        assert comparable(migrated.triplets(ids)) == expected
    con = create_warehouse(str(path))  # a span written since gets its agent name as it is stored
    insert_spans(con, pa.table({"trace_id": ["f" * 32], "span_id": ["f" * 16], "name": ["agent.run"],
                                "attributes": ['{"agent.name": "late"}'], "span_type": ["agent"]}))
    assert con.execute("SELECT agent_name FROM spans WHERE span_id = $s", {"s": "f" * 16}).fetchall() == [("late",)]
    assert con.execute("SELECT count(*) FROM spans WHERE agent_name IS NULL AND attributes->>'agent.name' "
                       "IS NOT NULL").fetchall() == [(0,)]
    con.close()


def test_rows_that_moved_meanwhile_make_the_selection_read_attributes(
        warehouse: tuple[Warehouse, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The few rows whose facts are read by row id afterwards must still be there: when the table
    was compacted between the two statements, the selection runs again without the column."""
    wh, ids = warehouse[0], list(warehouse[1])
    expected = comparable(TripletAdapter(wh).triplets(ids))
    original = bulk.with_attribute_facts
    calls: list[int] = []

    def moved(source: Any, t: pa.Table) -> pa.Table | None:
        import pyarrow.compute as pc

        assert t.column("row_id").null_count < len(t) - 10  # some rows need them here
        shifted = t.set_column(t.column_names.index("row_id"), "row_id", pc.add(t.column("row_id"), 1))
        calls.append(1)
        return original(source, shifted)

    monkeypatch.setattr(bulk, "with_attribute_facts", moved)
    queries: list[str] = []
    sql = wh.sql
    monkeypatch.setattr(wh, "sql", lambda q, *a, **k: queries.append(q) or sql(q, *a, **k))
    assert comparable(TripletAdapter(wh).triplets(ids)) == expected
    assert calls and sum("s.agent_name AS agent" in q for q in queries) == 1
    assert sum("regexp_matches(attributes::VARCHAR" in q and "attempt_rank" in q for q in queries) == 1


def test_facts_read_by_row_id_land_on_their_rows_in_any_order(warehouse: tuple[Warehouse, dict[str, Any]]) -> None:
    """The facts read afterwards by row id come back in whatever order DuckDB's join gives them;
    each must land on its own row: the same table whether they come back in order or reversed, and
    the same reward operations and response ids as reading every span's attributes."""
    from spanpipe.warehouse.views import Shapes

    wh, ids = warehouse[0], list(warehouse[1])
    adapter = TripletAdapter(wh)
    shapes = Shapes.of(wh, "rollout_id IS NOT NULL")
    assert shapes.derived
    selected = wh.sql(bulk.forest_query(ids, adapter.candidate_sql(shapes), True, derived=True))
    assert selected.column("row_id").null_count < len(selected) - 50

    class Reversed:
        def sql(self, query: str) -> pa.Table:
            t = wh.sql(query)
            return t.take(pa.array(list(range(t.num_rows - 1, -1, -1))))

    in_order = bulk.with_attribute_facts(wh, selected)
    reversed_ = bulk.with_attribute_facts(Reversed(), selected)
    assert in_order is not None and reversed_ is not None and in_order.equals(reversed_)
    plain = wh.sql(bulk.forest_query(ids, adapter.candidate_sql(shapes), True, derived=False))
    key = ["k", "ha", "sid", "psid", "start_time_unix_nano", "end_time_unix_nano", "sequence_id"]
    facts = ["reward_operation", "response_id", "agent"]
    assert in_order.select(key + facts).sort_by([(c, "ascending") for c in key + facts]).equals(
        plain.select(key + facts).sort_by([(c, "ascending") for c in key + facts]))


def test_payload_indexer_with_a_full_backlog_leaves_new_spans_to_the_readers(warehouse: tuple[Warehouse, dict[str, Any]]) -> None:
    """Under sustained load the backlog stays full: what arrives then is not taken (nor filtered),
    and what was waiting is indexed once the writer is idle."""
    import threading

    from spanpipe.warehouse.payloads import PayloadIndexer

    wh, ids = warehouse[0], list(warehouse[1])

    def spans_of(rollout: str) -> pa.Table:
        return wh.sql(f"SELECT * EXCLUDE (attributes, events), attributes::VARCHAR AS attributes, "
                      f"events::VARCHAR AS events FROM spans WHERE rollout_id = '{rollout}'")

    def llm_ids(rollout: str) -> set[str]:
        return set(wh.sql(f"SELECT span_id FROM triplet_payloads WHERE rollout_id = '{rollout}'"
                          ).column("span_id").to_pylist())

    busy = threading.Event()
    busy.set()
    written: list[pa.Table] = []
    indexer = PayloadIndexer("test", busy.is_set, written.append, max_rows=len(llm_ids(ids[1])))
    indexer.submit(spans_of(ids[1]))
    indexer.submit(spans_of(ids[2]))
    assert indexer.skipped == len(llm_ids(ids[2])) > 0
    _drain_when_idle(indexer, busy)
    assert {s for t in written for s in t.column("span_id").to_pylist()} == llm_ids(ids[1])
