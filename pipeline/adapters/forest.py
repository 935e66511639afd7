"""The TripletAdapter's decisions for many rollouts at once, in NumPy: no Python object per span.

Input: the spans of many rollout attempts ("groups"), one row each, groups contiguous and each in
warehouse order (sequence id, start time), with the parent's row already resolved (`parent`).
Output: which LLM calls are kept, in the adapter's order, with their agent scope; then which reward
each one gets.

This path takes only *well-formed* groups, where Agent Lightning's tree needs no virtual node and
its hierarchy repair would move nothing: exactly one root, every parent present, no cycle, no span
id twice, and no direct child of the repair's top node strictly enclosed in time by another
descendant of it. Every other group is reported in `Decisions.unsure` and decided by `tree.Tree`,
the one-rollout-at-a-time reference, so the two paths can never disagree on a malformed rollout.

On a well-formed tree the decisions are per-node facts that flow from parent to child — the agent
scope, "inside a reward span", "has a kept LLM ancestor" — so they are computed level by level
(one NumPy pass per tree depth), and the depth-first order is a pre-order number from subtree
sizes. Reward matching is a short sequential scan over calls and rewards only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_AGENT = -1   # outside any matching agent
ANY_AGENT = -2  # agent_match unset and no agent seen yet: Agent Lightning's "*"
_MAX_JUMPS = 64


@dataclass
class Groups:
    """Per-row inputs. `parent` is a row index or -1 (a root, or a parent not found in the group:
    `has_parent` tells them apart); `agent` a code into the caller's agent names or -1;
    `response` a code of the response id or -1."""

    group: np.ndarray       # int64, non-decreasing
    parent: np.ndarray      # int64
    has_parent: np.ndarray  # bool: parent_span_id set (and not the span's own id)
    duplicate: np.ndarray   # bool: this row's span id appears twice in its group
    start: np.ndarray       # int64
    end: np.ndarray         # int64
    candidate: np.ndarray   # bool: an LLM call candidate
    reward: np.ndarray      # float64, NaN when not a reward span
    reward_operation: np.ndarray  # bool
    agent: np.ndarray       # int64 code, -1 none
    response: np.ndarray    # int64 code, -1 none


@dataclass
class Decisions:
    unsure: np.ndarray      # group numbers to decide with the reference tree
    calls: np.ndarray       # kept rows, by group then depth-first order
    agents: np.ndarray      # agent code of each kept call (ANY_AGENT, or >= 0)
    sure: np.ndarray        # bool per row: its group is decided here
    parent: np.ndarray      # per row: the parent row, -1 for a root (sure rows only)
    preorder: np.ndarray    # per row: depth-first position in its group (sure rows only)


def decide(x: Groups, agent_matches: np.ndarray | None, exclude_in_reward: bool, repair: bool,
           nested_rule: bool) -> Decisions:
    """`agent_matches[code]`: whether that agent name matches agent_match (None: agent_match unset)."""
    n = len(x.group)
    if n == 0:
        empty = np.zeros(0, np.int64)
        return Decisions(empty, empty, empty, np.zeros(0, bool), empty, empty)
    group = x.group
    n_groups = int(group[-1]) + 1
    is_root = ~x.has_parent
    bad = np.zeros(n_groups, bool)
    bad[group[x.duplicate]] = True
    bad[group[x.has_parent & (x.parent < 0)]] = True  # a parent that is not stored: a virtual node
    bad |= np.bincount(group[is_root], minlength=n_groups) != 1
    bad[group[x.end < x.start]] = True

    # Every row must reach its group's root (no cycle); pointer jumping, log2(depth) passes.
    rows = np.arange(n)
    jump = np.where(x.parent >= 0, x.parent, rows)
    depth = (x.parent >= 0).astype(np.int64)
    for _ in range(_MAX_JUMPS):
        nxt = jump[jump]
        if np.array_equal(nxt, jump):
            break
        depth = depth + depth[jump]
        jump = nxt
    bad[group[~is_root[jump]]] = True

    # The repair's top: from the root down while a node has exactly one child.
    child_count = np.bincount(x.parent[x.parent >= 0], minlength=n)
    only_child = np.full(n, -1)
    only_child[x.parent[x.parent >= 0]] = rows[x.parent >= 0]
    good_roots = rows[is_root & ~bad[group]]
    top = np.full(n_groups, -1)
    on_chain = np.zeros(n, bool)
    cur = good_roots.copy()
    while len(cur):
        on_chain[cur] = True
        down = child_count[cur] == 1
        top[group[cur[~down]]] = cur[~down]
        cur = only_child[cur[down]]
    if repair:
        bad |= _repair_would_move(x, group, n_groups, top, on_chain)

    keep = ~bad[group]
    sure_rows = rows[keep]
    parent_row = np.full(n, -1)
    preorder = np.full(n, -1)
    if len(sure_rows) == 0:
        empty = np.zeros(0, np.int64)
        return Decisions(np.flatnonzero(bad), empty, empty, keep, parent_row, preorder)
    new_index = np.cumsum(keep) - 1
    parent = np.where(x.parent[keep] >= 0, new_index[np.maximum(x.parent[keep], 0)], -1)
    g = group[keep]
    depth = depth[keep]
    m = len(sure_rows)

    by_depth = np.argsort(depth, kind="stable")
    level_bounds = np.concatenate([[0], np.cumsum(np.bincount(depth))])
    levels = [by_depth[level_bounds[d]:level_bounds[d + 1]] for d in range(len(level_bounds) - 1)]

    size = np.ones(m, np.int64)
    for nodes in reversed(levels[1:]):
        np.add.at(size, parent[nodes], size[nodes])

    agent = x.agent[keep]
    own = np.where(agent >= 0, agent if agent_matches is None else np.where(
        agent_matches[np.maximum(agent, 0)], agent, NO_AGENT), -3)  # -3: no name of its own
    rewardish = ~np.isnan(x.reward[keep]) | x.reward_operation[keep]
    candidate = x.candidate[keep]
    start_agent = ANY_AGENT if agent_matches is None else NO_AGENT

    pre = np.zeros(m, np.int64)
    scope = np.full(m, start_agent)     # the agent a node is inside (before its own name counts)
    in_reward = np.zeros(m, bool)       # inside a reward span (not counting itself)
    for nodes in levels[1:]:
        par = parent[nodes]
        par_own = own[par]
        scope[nodes] = np.where(par_own != -3, par_own, scope[par])
        in_reward[nodes] = in_reward[par] | rewardish[par]
        order = np.lexsort((nodes, par))
        sib, sib_par = nodes[order], par[order]
        before = np.cumsum(size[sib]) - size[sib]
        first = np.concatenate([[True], sib_par[1:] != sib_par[:-1]])
        base = before[np.maximum.accumulate(np.where(first, np.arange(len(sib)), 0))]
        pre[sib] = pre[sib_par] + 1 + before - base

    eligible = candidate & (scope != NO_AGENT)
    if exclude_in_reward:
        eligible &= ~in_reward
    response = x.response[keep]
    first_of_id = np.zeros(m, bool)
    with_id = np.flatnonzero(eligible & (response >= 0))
    if len(with_id):
        order = with_id[np.lexsort((pre[with_id], response[with_id], g[with_id]))]
        new = np.concatenate([[True], (g[order][1:] != g[order][:-1]) | (response[order][1:] != response[order][:-1])])
        first_of_id[order[new]] = True
    kept = eligible & (response >= 0) & first_of_id
    without_id = eligible & (response < 0)
    if nested_rule:
        # A call without a response id is dropped when a kept call encloses it in the tree.
        under_kept = np.zeros(m, bool)
        kept |= without_id & (depth == 0)
        for nodes in levels[1:]:
            par = parent[nodes]
            under_kept[nodes] = under_kept[par] | kept[par]
            kept[nodes] |= without_id[nodes] & ~under_kept[nodes]
    else:
        kept |= without_id
    calls = np.flatnonzero(kept)
    calls = calls[np.lexsort((pre[calls], g[calls]))]
    parent_row[sure_rows] = np.where(parent >= 0, sure_rows[np.maximum(parent, 0)], -1)
    preorder[sure_rows] = pre
    return Decisions(np.flatnonzero(bad), sure_rows[calls], scope[calls], keep, parent_row, preorder)


def _repair_would_move(x: Groups, group: np.ndarray, n_groups: int, top: np.ndarray,
                       on_chain: np.ndarray) -> np.ndarray:
    """Groups where some child of the top node (which has two or more) is strictly enclosed in
    time by another descendant of the top: the repair would move it."""
    has_top = top[group] >= 0
    kid = has_top & (x.parent >= 0) & (x.parent == np.where(has_top, top[group], -2))
    kids = np.bincount(group[kid], minlength=n_groups)
    check = (kids >= 2)[group]
    if not check.any():
        return np.zeros(n_groups, bool)
    result = np.zeros(n_groups, bool)
    rows = np.flatnonzero(check)
    # Rows of a group are contiguous: per-group reductions are reduceat over the group starts.
    firsts = np.flatnonzero(np.concatenate([[True], group[rows][1:] != group[rows][:-1]]))
    present = group[rows][firsts]
    first_start = np.full(n_groups, np.iinfo(np.int64).max)
    first_start[present] = np.minimum.reduceat(x.start[rows], firsts)
    span = np.zeros(n_groups, np.int64)
    span[present] = np.maximum.reduceat(x.end[rows] - first_start[group[rows]], firsts)
    huge = span > 2**60  # implausible times (decades): leave to the tree
    result[huge] = True
    rows = rows[~huge[group[rows]]]
    # Group offsets keep groups apart in one running maximum; chunks keep the offsets in int64.
    width = (span + 2).astype(np.float64)
    chunk = np.floor(np.cumsum(width) / 2.0**61).astype(np.int64)
    row_chunk = chunk[group[rows]]
    if len(rows) and row_chunk[0] == row_chunk[-1]:  # one chunk (chunks are non-decreasing): all rows
        _enclosed_kids(x, group, rows, kid, on_chain, first_start, span, result)
    else:
        for c in np.unique(row_chunk):
            _enclosed_kids(x, group, rows[row_chunk == c], kid, on_chain, first_start, span, result)
    return result


def _enclosed_kids(x: Groups, group: np.ndarray, rows: np.ndarray, kid: np.ndarray, on_chain: np.ndarray,
                   first_start: np.ndarray, span: np.ndarray, result: np.ndarray) -> None:
    """Marks in `result` the groups among `rows` where a kid has an encloser: a running maximum of
    end times in (start, end desc) order, excluding the top and its ancestors (which enclose
    everything by construction and are not candidates)."""
    g, s, e = group[rows], x.start[rows], x.end[rows]
    groups = g[np.concatenate([[True], g[1:] != g[:-1]])]  # rows come in group order
    offset = np.zeros(len(span), np.int64)
    offset[groups] = np.concatenate([[0], np.cumsum(span[groups] + 2)[:-1]])
    group_offset = offset[g]
    base = group_offset - first_start[g]  # a time t of row i's group lies at base[i] + t
    end_at = base + e
    key = np.where(on_chain[rows], group_offset - 1, end_at)
    order = np.lexsort((-e, base + s))  # (group, start, end descending)
    running = np.maximum.accumulate(key[order])
    gs, ss, es = g[order], s[order], e[order]
    run_start = np.concatenate([[True], (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1]) | (es[1:] != es[:-1])])
    first_of_run = np.maximum.accumulate(np.where(run_start, np.arange(len(order)), 0))
    before = np.where(first_of_run > 0, running[np.maximum(first_of_run - 1, 0)], np.iinfo(np.int64).min)
    enclosed = (before >= end_at[order]) & kid[rows][order]
    result[gs[enclosed]] = True


def match_rewards(calls: np.ndarray, rewards: np.ndarray, reward_value: np.ndarray, start: np.ndarray,
                  end: np.ndarray, key: np.ndarray, order_key: tuple[np.ndarray, ...]) -> dict[int, float]:
    """Agent Lightning's reward matching over call and reward rows: in `order_key` order (last key
    most significant, as np.lexsort), restarting whenever `key` changes, each reward goes to the
    latest finished, still unrewarded call seen so far. Returns {call row: reward}."""
    if len(calls) == 0 or len(rewards) == 0:
        return {}
    is_call = np.zeros(len(key), bool)
    is_call[calls] = True
    is_reward = np.zeros(len(key), bool)
    is_reward[rewards] = True
    rows = np.flatnonzero(is_call | is_reward)
    rows = rows[np.lexsort(tuple(k[rows] for k in order_key))]
    out: dict[int, float] = {}
    pending: list[int] = []
    current = None
    for row, k, call, rewarding, st, en, v in zip(rows.tolist(), key[rows].tolist(), is_call[rows].tolist(),
                                                  is_reward[rows].tolist(), start[rows].tolist(),
                                                  end[rows].tolist(), reward_value[rows].tolist()):
        if k != current:
            current, pending = k, []
        if call:
            pending.append((row, en))
        if rewarding:
            for c, c_end in reversed(pending):
                if c_end > st or c in out:
                    continue
                out[c] = v
                break
    return out
