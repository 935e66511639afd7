"""TripletAdapter: (prompt, response, reward) triplets from the warehouse, decided the way Agent
Lightning 0.3's `TracerTraceToTriplet` decides on the same spans.

Per rollout attempt: build the span tree (`tree.Tree`), optionally repair it, walk it depth-first
collecting LLM calls (name matches `llm_call_match`, or — our extension — the span is an LLM call
by any convention we know, `llm_conventions=True`), scoped to agents matching `agent_match`,
deduplicated by response id, skipped inside reward spans; then match rewards to calls
(`first_occurrence`: in start-time order each reward goes to the latest finished, still unrewarded
call; `first_sibling`: the same among preceding siblings). Only LLM spans have their attributes
parsed; the tree is built from plain columns.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Iterable, Literal

import orjson
import pyarrow as pa

from spanpipe.adapters.agl_payload import payload
from spanpipe.adapters.span_columns import SpanColumns, spans_to_columns
from spanpipe.adapters.triplet_types import NO_SPANS, AttemptDecision, RewardLink, Triplet, Triplets
from spanpipe.adapters.tree import Tree
from spanpipe.adapters.bulk import ATTRIBUTE_KEYS_SQL, AGENT_SQL, REWARD_OPERATION_SQL, bulk_triplets, response_id_sql
from spanpipe.warehouse.source import SqlSource
from spanpipe.warehouse.views import EVERY_SHAPE, Shapes, events_with_logs_sql, gateway_twin_sql, llm_attributes_sql
from spanpipe.warehouse.views import sql_string as _q
from spanpipe.userregex import compile_regex

logger = logging.getLogger(__name__)

RewardMatch = Literal["first_occurrence", "first_sibling"]

class TripletAdapter:
    def __init__(self, warehouse: SqlSource | None = None, llm_call_match: str = r"openai\.chat\.completion",
                 agent_match: str | None = None, reward_match: RewardMatch = "first_occurrence",
                 exclude_llm_call_in_reward: bool = True, repair_hierarchy: bool = True,
                 skip_empty_token_spans: bool = False, llm_conventions: bool = True, dedup_llm_call: bool = True,
                 attempts: Literal["latest", "all"] = "latest", bulk: bool = True,
                 token_ids_only: bool = False) -> None:
        if reward_match not in ("first_occurrence", "first_sibling"):
            raise ValueError(f"reward_match must be 'first_occurrence' or 'first_sibling', got {reward_match!r}")
        if attempts not in ("latest", "all"):
            raise ValueError(f"attempts must be 'latest' or 'all', got {attempts!r}")
        self.warehouse = warehouse
        self.llm_call_match = llm_call_match
        self.llm_re = compile_regex(llm_call_match)
        self.agent_match = agent_match
        self.agent_re = compile_regex(agent_match) if agent_match is not None else None
        self.reward_match = reward_match
        self.exclude_llm_call_in_reward = exclude_llm_call_in_reward
        self.repair_hierarchy = repair_hierarchy
        self.skip_empty_token_spans = skip_empty_token_spans
        self.llm_conventions = llm_conventions
        self.dedup_llm_call = dedup_llm_call
        self.attempts = attempts
        self.bulk = bulk  # False: every rollout through the reference tree (tree.Tree), none through forest
        # True: the bulk path reads only token ids and agent names (trajectories); prompt and
        # response come back as "{}" from it.
        self.token_ids_only = token_ids_only
        # False: the bulk path leaves each triplet's reward null (trajectories with the final reward)
        self.match_rewards = True

    # ---- reading the warehouse -------------------------------------------------------------
    def triplets(self, rollout_ids: Iterable[str] | None = None, since: int | None = None,
                 mode: str | None = None) -> Triplets:
        """Triplets of the given rollouts; or of rollouts completed after `since` (a cursor from a
        previous call's `.cursor`); optionally only rollouts of `mode` (train/val/test)."""
        wanted, cursor = self.select(rollout_ids, since, mode)
        result = self._from_warehouse(wanted)
        result.cursor = cursor
        for rid, why in result.reasons.items():
            logger.warning("rollout %s gave no triplet: %s", rid, why)
        return result

    def select(self, rollout_ids: Iterable[str] | None = None, since: int | None = None,
               mode: str | None = None) -> tuple[list[str], int | None]:
        """Which rollouts `triplets` reads, in order, and the cursor after them (None without `since`)."""
        if self.warehouse is None:
            raise ValueError("this adapter has no warehouse; use adapt(spans) or pass one")
        cursor = None
        if since is not None or rollout_ids is None:
            cond = f"seq > {int(since)}" if since is not None else "TRUE"
            done = self.warehouse.sql(f"SELECT rollout_id, seq FROM rollout_completions WHERE {cond} ORDER BY seq")
            ids_done = done.column("rollout_id").to_pylist()
            cursor = max(done.column("seq").to_pylist(), default=since if since is not None else 0)
            wanted = list(dict.fromkeys(ids_done)) if rollout_ids is None else \
                [r for r in dict.fromkeys(rollout_ids) if r in set(ids_done)]
        else:
            wanted = list(dict.fromkeys(rollout_ids))
        if mode is not None and wanted:
            modes = self.warehouse.sql(
                "SELECT DISTINCT rollout_id FROM spans WHERE name = 'agentlightning.rollout' AND "
                f"attributes->>'agentlightning.rollout.mode' = {_q(mode)} AND rollout_id IN "
                f"({', '.join(_q(r) for r in wanted)})").column("rollout_id").to_pylist()
            wanted = [r for r in wanted if r in set(modes)]
        return wanted, cursor

    def candidate_sql(self, shapes: Shapes = EVERY_SHAPE) -> str:
        by_name = f"regexp_matches(name, {_q(self.llm_call_match)})"
        llm = f"(span_type = 'llm' OR {by_name})" if self.llm_conventions else by_name
        return f"({llm} AND NOT {gateway_twin_sql('s', shapes)})"

    def _query(self, rollout_ids: list[str], shapes: Shapes = EVERY_SHAPE) -> str:
        ids = ", ".join(_q(r) for r in rollout_ids)
        candidate = self.candidate_sql(shapes)
        # `spans` below means these rollouts' spans only: the gateway-twin and stream-sibling
        # subqueries look within one rollout anyway, and then do not scan the whole table.
        return f"""
WITH spans AS MATERIALIZED (SELECT * FROM main.spans WHERE rollout_id IN ({ids}))
SELECT rollout_id, attempt_id, trace_id, span_id, parent_span_id, name, start_time_unix_nano, end_time_unix_nano,
       sequence_id, span_type, reward, {AGENT_SQL} AS agent_name,
       {response_id_sql(candidate)} AS response_id,
       {REWARD_OPERATION_SQL} AS reward_operation,
       CASE WHEN {candidate} THEN {llm_attributes_sql("s", shapes)} END AS attributes,
       CASE WHEN {candidate} THEN {events_with_logs_sql("s", shapes)} END AS events,
       COALESCE({candidate}, FALSE) AS candidate
FROM (SELECT *, {ATTRIBUTE_KEYS_SQL} AS v,
             min(start_time_unix_nano) OVER (PARTITION BY rollout_id, attempt_id) AS attempt_start
      FROM spans) s
ORDER BY rollout_id, attempt_start, attempt_id, sequence_id NULLS LAST, start_time_unix_nano, span_id"""

    def _from_warehouse(self, rollout_ids: list[str]) -> Triplets:
        """Well-formed rollouts in bulk (`bulk.py`), the rest — and rollouts without a triplet, to
        say why — one at a time through the reference tree; merged in the order asked."""
        if not rollout_ids:
            return Triplets()
        fast = bulk_triplets(self, rollout_ids) if self.bulk else None
        rest = [r for k, r in enumerate(rollout_ids) if fast is None or k not in fast.decided]
        slow = self._one_by_one(rest)
        if fast is None or fast.table.num_rows == 0:
            return slow
        if not len(slow):
            return Triplets(table=fast.table.drop_columns(["_k"]), reasons=slow.reasons, tokens=fast.tokens)
        fast = fast.with_token_columns()
        position = {r: k for k, r in enumerate(rollout_ids)}
        slow_table = slow.to_arrow().append_column("_k", pa.array([position[t.rollout_id] for t in slow], pa.int64()))
        merged = pa.concat_tables([fast.table, slow_table.cast(fast.table.schema)])
        merged = merged.append_column("_o", pa.array(range(merged.num_rows), pa.int64()))
        merged = merged.sort_by([("_k", "ascending"), ("_o", "ascending")]).drop_columns(["_k", "_o"])
        return Triplets(table=merged, reasons=slow.reasons)

    def _one_by_one(self, rollout_ids: list[str]) -> Triplets:
        items: list[Triplet] = []
        reasons: dict[str, str] = {}
        if not rollout_ids:
            return Triplets()
        groups = self._attempts_of(rollout_ids)
        for rid in rollout_ids:
            attempts = groups.get(rid)
            if not attempts:
                reasons[rid] = NO_SPANS
                continue
            if self.attempts == "latest" and len(attempts) > 1:
                attempts = [max(attempts, key=lambda a: max(a[1].start))]
            found: list[Triplet] = []
            why = None
            for aid, spans in attempts:
                triplets, why = self.adapt_columns(spans)
                for t in triplets:
                    t.rollout_id, t.attempt_id = rid, aid
                found += triplets
            if found:
                items += found
            else:
                reasons[rid] = why or "no LLM call found"
        return Triplets(items, reasons)

    def _attempts_of(self, rollout_ids: list[str]) -> dict[str, list[tuple[str | None, SpanColumns]]]:
        """The stored spans of `rollout_ids`, per rollout as (attempt id, its spans) in start order."""
        ids = ", ".join(_q(r) for r in rollout_ids)
        shapes = Shapes.of(self.warehouse, f"rollout_id IN ({ids})")
        table = self.warehouse.sql(self._query(rollout_ids, shapes))
        cols = {name: table.column(name).to_pylist() for name in table.column_names}
        rids, aids = cols["rollout_id"], cols["attempt_id"]
        groups: dict[str, list[tuple[str | None, SpanColumns]]] = {}
        i, n = 0, len(rids)
        while i < n:
            j = i
            while j < n and rids[j] == rids[i] and aids[j] == aids[i]:
                j += 1
            sl = {k: v[i:j] for k, v in cols.items()}
            groups.setdefault(rids[i], []).append((aids[i], SpanColumns(
                span_id=sl["span_id"], parent_span_id=sl["parent_span_id"], name=sl["name"],
                start=sl["start_time_unix_nano"], end=sl["end_time_unix_nano"], span_type=sl["span_type"],
                reward=sl["reward"], agent_name=sl["agent_name"], response_id=sl["response_id"],
                reward_operation=sl["reward_operation"], attributes=sl["attributes"], events=sl["events"],
                candidate=sl["candidate"], trace_id=sl["trace_id"], sequence_id=sl["sequence_id"])))
            i = j
        return groups

    def explain(self, rollout_id: str) -> list[AttemptDecision]:
        """Every attempt of one rollout with its triplets, why it gave none, and which call each
        reward span went to (and by which rule): what the adapter decided, for a person to read."""
        decisions = []
        for aid, spans in self._attempts_of([rollout_id]).get(rollout_id, []):
            links: list[RewardLink] = []
            triplets, why = self.adapt_columns(spans, links)
            for t in triplets:
                t.rollout_id, t.attempt_id = rollout_id, aid
            decisions.append(AttemptDecision(aid, spans, triplets, why, links))
        return decisions

    # ---- the decisions ---------------------------------------------------------------------
    def adapt_columns(self, s: SpanColumns, links: list[RewardLink] | None = None) -> tuple[list[Triplet], str | None]:
        """Triplets of one trace tree's spans, or ([], why); `links` gets one entry per reward span."""
        n = len(s.span_id)
        if n == 0:
            return [], "no spans"
        tree = Tree.build(s.span_id, s.parent_span_id, s.start, s.end)
        if self.repair_hierarchy:
            tree.repair()
        name_ok = {nm: bool(self.llm_re.search(nm or "")) for nm in set(s.name)}
        candidate = s.candidate if s.candidate is not None else \
            [name_ok[s.name[i]] or (self.llm_conventions and s.span_type[i] == "llm") for i in range(n)]
        reward_value = [s.reward[i] if s.span_type[i] == "reward" else None for i in range(n)]
        calls: list[tuple[int, str]] = []
        seen: set[str] = set()
        excluded = Counter()
        stack: list[tuple[int, str | None, bool | None, bool | None]] = [
            (tree.root, "*" if self.agent_re is None else None,
             False if self.exclude_llm_call_in_reward else None, False if self.dedup_llm_call else None)]
        while stack:
            i, agent, in_reward, in_llm = stack.pop()
            if i < n:  # past n: virtual parents and root
                if candidate[i]:
                    if agent is None:
                        excluded["outside a matching agent"] += 1
                    elif in_reward is True:
                        excluded["inside a reward span"] += 1
                    else:
                        rid = s.response_id[i]
                        if rid is None and in_llm is True:
                            excluded["nested in another LLM call without a response id"] += 1
                        elif rid is not None and rid in seen:
                            excluded["duplicate response id"] += 1
                        else:
                            calls.append((i, agent))
                            if rid is not None:
                                seen.add(rid)
                            if in_llm is not None:
                                in_llm = True
                name = s.agent_name[i]
                if name is not None:
                    agent = name if self.agent_re is None or self.agent_re.search(name) else None
                if in_reward is not None and (reward_value[i] is not None or s.reward_operation[i]):
                    in_reward = True
            for c in reversed(tree.children[i]):
                stack.append((c, agent, in_reward, in_llm))

        triplets: list[Triplet] = []
        kept: list[int] = []
        empty_tokens = 0
        for i, agent in calls:
            attrs = orjson.loads(s.attributes[i]) if s.attributes[i] else {}
            events = orjson.loads(s.events[i]) if s.events[i] else None
            prompt, response, metadata = payload(attrs, events, agent)
            if self.skip_empty_token_spans and (not prompt["token_ids"] or not response["token_ids"]):
                empty_tokens += 1
                continue
            kept.append(i)
            triplets.append(Triplet(prompt, response, None, metadata, trace_id=s.trace_id[i] if s.trace_id else None,
                                    span_id=s.span_id[i], sequence_id=s.sequence_id[i] if s.sequence_id else None))
        rewards = self._match_rewards(tree, kept, reward_value)
        for i, t in zip(kept, triplets):
            t.reward = rewards[i][0] if i in rewards else None
        if links is not None:
            went_to = {r: c for c, (_, r) in rewards.items()}
            for r, v in enumerate(reward_value):
                if v is not None:
                    c = went_to.get(r)
                    links.append(RewardLink(s.span_id[r], v, None if c is None else s.span_id[c],
                                            self.reward_match if c is not None else None))
        if triplets:
            return triplets, None
        return [], self._why_none(s, candidate, calls, excluded, empty_tokens)

    def _match_rewards(self, tree: Tree, calls: list[int],
                       reward_value: list[float | None]) -> dict[int, tuple[float, int]]:
        """Call node → (reward value, reward node) by `reward_match`."""
        call_set = set(calls)
        rewards: dict[int, tuple[float, int]] = {}

        n = len(reward_value)

        def value(i: int) -> float | None:
            return reward_value[i] if i < n else None

        def assign(pending: list[tuple[int, int]], reward: int, v: float) -> None:
            for cid, cend in reversed(pending):
                if cend > tree.start[reward] or cid in rewards:
                    continue
                rewards[cid] = (v, reward)
                return

        if self.reward_match == "first_occurrence":
            pending: list[tuple[int, int]] = []
            for i in sorted(tree.dfs(), key=lambda k: tree.start[k]):
                if i in call_set:
                    pending.append((i, tree.end[i]))
                v = value(i)
                if v is not None:
                    assign(pending, i, v)
        else:
            for node in tree.dfs():
                pending = []
                for c in tree.children[node]:
                    if c in call_set:
                        pending.append((c, tree.end[c]))
                    v = value(c)
                    if v is not None:
                        assign(pending, c, v)
        return rewards

    def _why_none(self, s: SpanColumns, candidate: list[bool], calls: list, excluded: Counter,
                  empty_tokens: int) -> str:
        if not any(candidate):
            names = Counter(s.name).most_common(12)
            seen = ", ".join(f"{nm!r}×{c}" for nm, c in names)
            return (f"no LLM span matched (llm_call_match={self.llm_call_match!r}"
                    f"{', conventions on' if self.llm_conventions else ''}); span names seen: {seen}")
        if calls and empty_tokens == len(calls):
            return f"{len(calls)} LLM call(s) found but none had token ids (skip_empty_token_spans=True)"
        parts = [f"{c} {why}" for why, c in excluded.items()]
        agents = sorted({a for a in s.agent_name if a is not None})
        extra = f"; agents seen: {agents}" if self.agent_re is not None else ""
        return f"{sum(candidate)} LLM span(s) found, none kept: {', '.join(parts)}{extra}"

    def adapt(self, spans: list[dict[str, Any]]) -> Triplets:
        """Triplets of one rollout given as span dicts (warehouse rows, or OTel-like dicts with
        `span_id`, `parent_id`/`parent_span_id`, `name`, `start_time`, `end_time`, `attributes`)."""
        cols = spans_to_columns(spans, self)
        triplets, why = self.adapt_columns(cols)
        return Triplets(triplets, {"": why} if why else {})
