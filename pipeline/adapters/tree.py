"""A rollout's spans as a tree, built and repaired the way Agent Lightning 0.3's TraceTree does, in
O(n log n) instead of its O(n²) repair.

Nodes are list indices — the input spans first, virtual nodes after them; `children[i]` keeps input order (the warehouse's sequence order). Missing
parents become virtual nodes spanning their children; several roots hang under one virtual root
spanning first root's start .. last root's end.

Repair (Agent Lightning's semantics): descend from the root while a node has exactly one child;
each direct child `r` of that node moves under the tightest span that strictly encloses it in
time (start ≤, end ≥, longer), chosen among the node's other descendants, ties going to the first
in depth-first order; stop when one child is left. Candidates are pre-filtered with sorted start
times and a running maximum of end times, so the common case (nothing encloses `r`) is a bisect.
Differences, only on malformed data: a span is never moved under its own descendant (Agent
Lightning would detach that subtree), and ties use the depth-first order from before the repair.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass


@dataclass
class Tree:
    span_ids: list[str | None]
    start: list[int]
    end: list[int]
    children: list[list[int]]
    root: int

    @classmethod
    def build(cls, span_ids: list[str], parent_ids: list[str | None], start: list[int], end: list[int]) -> Tree:
        n = len(span_ids)
        ids: list[str | None] = list(span_ids)
        start, end = list(start), list(end)
        index = {sid: i for i, sid in enumerate(span_ids)}
        children: list[list[int]] = [[] for _ in range(n)]
        roots: list[int] = []
        missing: dict[str, int] = {}
        for i, pid in enumerate(parent_ids):
            if pid is None or pid == span_ids[i]:
                roots.append(i)
                continue
            p = index.get(pid)
            if p is None:
                p = missing.get(pid)
                if p is None:
                    p = missing[pid] = len(ids)
                    ids.append(pid)
                    start.append(start[i])
                    end.append(end[i])
                    children.append([])
                else:
                    start[p] = min(start[p], start[i])
                    end[p] = max(end[p], end[i])
            children[p].append(i)
        roots += missing.values()
        if not roots:
            raise ValueError("no root span (every span's parent is in a cycle)")
        if len(roots) == 1:
            root = roots[0]
        else:
            root = len(ids)
            ids.append("virtual-root")
            start.append(start[roots[0]])
            end.append(end[roots[-1]])
            children.append(list(roots))
        return cls(ids, start, end, children, root)

    def dfs(self, top: int | None = None) -> list[int]:
        order, stack = [], [self.root if top is None else top]
        while stack:
            i = stack.pop()
            order.append(i)
            stack.extend(reversed(self.children[i]))
        return order

    def parents(self) -> list[int]:
        parent = [-1] * len(self.children)
        for p, kids in enumerate(self.children):
            for c in kids:
                parent[c] = p
        return parent

    def repair(self) -> None:
        top = self.root
        while len(self.children[top]) == 1:
            top = self.children[top][0]
        kids = self.children[top]
        if len(kids) < 2:
            return
        order = self.dfs(top)[1:]
        rank = {node: r for r, node in enumerate(order)}
        by_start = sorted(order, key=lambda i: (self.start[i], self.end[i]))
        starts = [self.start[i] for i in by_start]
        ends = [self.end[i] for i in by_start]
        run_max, m = [], None
        for e in ends:
            m = e if m is None or e > m else m
            run_max.append(m)
        parent = self.parents()
        remaining = list(kids)
        for r in list(kids):
            if len(remaining) == 1:
                break
            s, e = self.start[r], self.end[r]
            lo, hi = bisect_left(starts, s), bisect_right(starts, s)
            # Something with an earlier start reaching e, or the same start and a later end.
            if not ((lo > 0 and run_max[lo - 1] >= e) or (hi > lo and ends[hi - 1] > e)):
                continue
            dur, best, best_key = e - s, -1, None
            for node in by_start[:hi]:
                if node == r or self.end[node] < e:
                    continue
                delta = self.end[node] - self.start[node] - dur
                if delta <= 0:
                    continue
                key = (delta, rank[node])
                if best_key is None or key < best_key:
                    if self._descends_from(node, r, parent, top):
                        continue
                    best, best_key = node, key
            if best >= 0:
                remaining.remove(r)
                self.children[best].append(r)
                parent[r] = best
        self.children[top] = remaining

    @staticmethod
    def _descends_from(node: int, ancestor: int, parent: list[int], top: int) -> bool:
        while node != top and node >= 0:
            if node == ancestor:
                return True
            node = parent[node]
        return False
