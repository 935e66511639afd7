"""TripletAdapter: the same triplets as Agent Lightning 0.3's TracerTraceToTriplet on hand-built
rollouts (fixture from `make compat`), directly and after a trip through a real collector."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from spanpipe.adapters.triplets import TripletAdapter
from spanpipe.warehouse.warehouse import Warehouse
from tests.collector import Collector
from tests.triplet_cases import CASES, agl_view, options_of, otlp_request, spans_of

EXPECTED = json.loads((Path(__file__).parent / "fixtures" / "triplets_agl.json").read_text())


def test_fixture_covers_every_case_and_is_not_trivial() -> None:
    assert set(EXPECTED) == set(CASES)
    rewards = [t["reward"] for ts in EXPECTED.values() for t in ts]
    assert sum(r is not None for r in rewards) >= 15 and sum(r is None for r in rewards) >= 8


def test_same_triplets_as_agentlightning_on_hand_built_spans() -> None:
    for case in CASES:
        got = TripletAdapter(**options_of(case)).adapt(spans_of(case))
        assert agl_view(got) == EXPECTED[case], case


def test_no_triplet_says_why() -> None:
    none = TripletAdapter().adapt(spans_of("no_llm_span"))
    assert none == [] and "no LLM span matched" in none.reasons[""] and "'tool.calc'" in none.reasons[""]
    excluded = TripletAdapter(agent_match="^nobody$").adapt(spans_of("several_agents_nested"))
    why = excluded.reasons[""]
    assert "4 LLM span(s) found, none kept: 4 outside a matching agent" in why and "'planner'" in why
    skipped = TripletAdapter(skip_empty_token_spans=True).adapt(
        [s for s in spans_of("no_token_ids_skipped") if s["span_id"] != "0000000000000003"])
    assert "none had token ids" in skipped.reasons[""]


def test_same_triplets_through_a_collector(tmp_path: Path) -> None:
    with Collector(tmp_path, processors={"rollout": {}, "reward": {}, "batch": {"timeout": "20ms"}}) as c:
        with grpc.insecure_channel(c.grpc_endpoint) as ch:
            stub = TraceServiceStub(ch)
            for n, case in enumerate(CASES):
                stub.Export(otlp_request(case, f"ro-{case}", f"{n + 1:032x}"), timeout=10)
        wh = Warehouse.connect(c.query_url)
        deadline = time.monotonic() + 20
        expected_rows = sum(len(spans_of(case)) for case in CASES)
        while wh.sql("SELECT count(*) AS n FROM spans").column("n")[0].as_py() < expected_rows:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # In its idle time the writer stores a payload for every LLM span, so reads only join them.
        llm_spans = wh.sql("SELECT count(*) AS n FROM spans WHERE span_type = 'llm' OR "
                           "regexp_matches(name, 'openai\\.chat\\.completion')").column("n")[0].as_py()
        while wh.sql("SELECT count(*) AS n FROM triplet_payloads").column("n")[0].as_py() < llm_spans:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert wh.sql("SELECT count(*) AS n FROM triplet_payloads").column("n")[0].as_py() == llm_spans > 40
        for case in CASES:
            got = wh.triplets([f"ro-{case}"], **options_of(case))
            assert agl_view(got) == EXPECTED[case], case
            assert all(t.rollout_id == f"ro-{case}" and t.attempt_id == "at-1" for t in got)
            if not EXPECTED[case]:
                assert got.reasons[f"ro-{case}"]
        both = wh.triplets(["ro-flat_final_reward", "ro-intermediate_rewards", "ro-missing"])
        assert [t.reward for t in both] == [None, None, 1.0, 0.1, 0.2, None]
        assert both.reasons == {"ro-missing": "no spans stored for this rollout"}
        assert c.stop() == 0
    # The same answers from the file once the collector is gone.
    with Warehouse.open(c.db) as wh:
        got = wh.triplets(["ro-several_agents_nested"])
        assert agl_view(got) == EXPECTED["several_agents_nested"]
        assert [t.span_id for t in got] == ["0000000000000003", "0000000000000005", "0000000000000007",
                                            "0000000000000009"]
