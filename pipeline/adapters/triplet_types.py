"""What the triplet adapter returns: `Triplet`, the `Triplets` container (Arrow-backed), and what
`TripletAdapter.explain` says about an attempt (`AttemptDecision`, `RewardLink`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import orjson
import pyarrow as pa

if TYPE_CHECKING:
    from spanpipe.adapters.span_columns import SpanColumns

NO_SPANS = "no spans stored for this rollout"

_BLOCK = 4096


def _json(v: Any) -> str:
    return orjson.dumps(v).decode()


@dataclass
class Triplet:
    prompt: dict[str, Any]
    response: dict[str, Any]
    reward: float | None
    metadata: dict[str, Any]
    rollout_id: str | None = None
    attempt_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    sequence_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RULE_IN_WORDS = {
    "first_occurrence": "first_occurrence: the latest call that finished before the reward started "
                        "and had no reward yet",
    "first_sibling": "first_sibling: the latest sibling call that finished before the reward started "
                     "and had no reward yet",
}


@dataclass
class RewardLink:
    """One reward span and the LLM call whose triplet it scores (None: no call could take it)."""
    reward_span_id: str | None
    value: float
    call_span_id: str | None
    rule: str | None

    @property
    def why(self) -> str:
        if self.rule is None:
            return "no call finished before this reward without already having one: it scores no triplet"
        return RULE_IN_WORDS[self.rule]


@dataclass
class AttemptDecision:
    attempt_id: str | None
    spans: SpanColumns
    triplets: list[Triplet]
    why_none: str | None
    reward_links: list[RewardLink]


def one_array(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array; no copy when it already is one chunk (`combine_chunks` copies
    even then: 0.55 s for 240 MB of token ids)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


@dataclass
class TokenLists:
    """Each triplet's token ids as row `row[i]` of `prompts` / `responses`, in the order the stored
    payloads were read: what trajectories read, without first copying a big pull's tens of millions
    of ids into triplet order."""

    prompts: pa.ListArray
    responses: pa.ListArray
    row: np.ndarray

    @classmethod
    def of(cls, table: pa.Table) -> TokenLists:
        return cls(one_array(table.column("prompt_token_ids")), one_array(table.column("response_token_ids")),
                   np.arange(table.num_rows))

    def select(self, keep: np.ndarray) -> TokenLists:
        return TokenLists(self.prompts, self.responses, self.row[keep])

    def into(self, table: pa.Table) -> pa.Table:
        """`table` (TRIPLET_COLUMNS in order without the token ids) with them in their place, in
        triplet order."""
        index, at = pa.array(self.row), TRIPLET_COLUMNS.index("prompt_token_ids")
        return table.add_column(at, "prompt_token_ids", self.prompts.take(index)).add_column(
            at + 1, "response_token_ids", self.responses.take(index))


class Triplets(Sequence[Triplet]):
    """Triplets with `.reasons` (rollout_id → why it gave none) and `.cursor` (for `since=`).

    Read from the warehouse, they are held as one Arrow table (`to_arrow()`, token ids as int32
    lists ready for a tensor) and a `Triplet` object is made only for the rows you index."""

    def __init__(self, items: Iterable[Triplet] = (), reasons: dict[str, str] | None = None,
                 cursor: int | None = None, table: pa.Table | None = None, tokens: TokenLists | None = None) -> None:
        self._table = table
        self._tokens = tokens  # the token id columns, while `table` does not hold them yet
        self._items: list[Triplet | None] = list(items) if table is None else [None] * table.num_rows
        self.reasons: dict[str, str] = reasons or {}
        self.cursor = cursor

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        item = self._items[index]
        if item is None:
            i = range(len(self))[index]
            self._materialise(i - i % _BLOCK)
            item = self._items[i]
        return item

    def _materialise(self, lo: int) -> None:
        """Make the Triplet objects of rows lo .. lo + _BLOCK at once (column-wise conversion)."""
        block = self._table.slice(lo, _BLOCK)
        cols = {name: block.column(name).to_pylist() for name in TRIPLET_COLUMNS if not name.endswith("token_ids")}
        loads = orjson.loads
        for k in range(block.num_rows):
            self._items[lo + k] = Triplet(
                loads(cols["prompt"][k]), loads(cols["response"][k]), cols["reward"][k], loads(cols["metadata"][k]),
                rollout_id=cols["rollout_id"][k], attempt_id=cols["attempt_id"][k], trace_id=cols["trace_id"][k],
                span_id=cols["span_id"][k], sequence_id=cols["sequence_id"][k])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (list, Sequence)) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Triplets({len(self)} triplets, {len(self.reasons)} rollouts without any)"

    def to_arrow(self, token_ids: bool = True) -> pa.Table:
        """The triplets as one table (TRIPLET_COLUMNS); without the two token id columns when
        `token_ids` is False."""
        table = self._table if self._table is not None else triplets_to_arrow(self)
        if not token_ids:
            return table.drop_columns([c for c in _TOKEN_COLUMNS if c in table.column_names])
        if self._tokens is not None:
            table = self._tokens.into(table)
            self._table, self._tokens = table, None
        return table

    def token_lists(self) -> TokenLists:
        """Each triplet's token ids, as rows of two list arrays (no copy when read in bulk)."""
        return self._tokens if self._tokens is not None else TokenLists.of(self.to_arrow())

    def to_jsonl(self, path: str | Path) -> int:
        with open(path, "wb") as f:
            for t in self:
                f.write(orjson.dumps(t.to_dict()) + b"\n")
        return len(self)


_TOKEN_COLUMNS = ("prompt_token_ids", "response_token_ids")
TRIPLET_COLUMNS = ("rollout_id", "attempt_id", "trace_id", "span_id", "sequence_id", "prompt_token_ids",
                   "response_token_ids", "reward", "prompt", "response", "metadata")


def triplets_to_arrow(triplets: Iterable[Triplet]) -> pa.Table:
    triplets = list(triplets)
    return pa.table({
        "rollout_id": pa.array([t.rollout_id for t in triplets], pa.string()),
        "attempt_id": pa.array([t.attempt_id for t in triplets], pa.string()),
        "trace_id": pa.array([t.trace_id for t in triplets], pa.string()),
        "span_id": pa.array([t.span_id for t in triplets], pa.string()),
        "sequence_id": pa.array([t.sequence_id for t in triplets], pa.int64()),
        "prompt_token_ids": pa.array([t.prompt.get("token_ids") or [] for t in triplets], pa.list_(pa.int32())),
        "response_token_ids": pa.array([t.response.get("token_ids") or [] for t in triplets], pa.list_(pa.int32())),
        "reward": pa.array([t.reward for t in triplets], pa.float64()),
        "prompt": pa.array([_json(t.prompt) for t in triplets], pa.string()),
        "response": pa.array([_json(t.response) for t in triplets], pa.string()),
        "metadata": pa.array([_json(t.metadata) for t in triplets], pa.string()),
    })
