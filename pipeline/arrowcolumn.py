"""SpanBatch columns held as Arrow arrays, made where a request is decoded (a decode worker).

A decode worker ships a batch to the collector process as one Arrow IPC record batch
(`to_record_batch`, `from_record_batch`): reading it there takes microseconds and builds no Python
object per span, where unpickling lists of per-span values was the collector process's largest
cost. The columns stay Arrow on their way to the writer, which stores the arrays as they are
(`spanbatch_arrow.spans_table`); a processor that reads a column gets Python values, made from the
array once (`ArrowColumn`, `JsonColumn`), so processors are written against plain sequences.

The attributes, events and links travel as their stored JSON (`spanbatch.dumps`) and become
Python values in one `orjson.loads` when read. A value JSON would not give back exactly (bytes,
NaN, ±Infinity) travels beside it in `exact`, and is what a reader gets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Union

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from spanpipe.spanbatch import EMPTY_JSON_LIST, LazyColumn, SpanBatch, dumps, dumps_exact

Arrowish = Union[pa.Array, pa.ChunkedArray]

# The SpanBatch columns shipped as Arrow, with their types; the rest (resources, resource_index)
# are a few objects per request and travel pickled.
SCALAR_COLUMNS: dict[str, pa.DataType] = {
    "trace_id": pa.string(), "span_id": pa.string(), "parent_span_id": pa.string(),
    "trace_state": pa.string(), "name": pa.string(), "kind": pa.int32(),
    "start_time_unix_nano": pa.int64(), "end_time_unix_nano": pa.int64(), "status_code": pa.int32(),
    "status_message": pa.string(), "scope_name": pa.string(), "scope_version": pa.string(),
}
# JSON columns and whether an empty one ("[]") reads as None, as the decoder leaves no events.
JSON_COLUMNS: dict[str, bool] = {"attributes": False, "events": True, "links": True}
# A key written in JSON as it is, by any encoder (nothing in it is escaped).
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def _chunks(parts: Sequence[Arrowish]) -> list[pa.Array]:
    return [c for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else (p,))]


def _concat(parts: Sequence[Arrowish]) -> Arrowish:
    chunks = _chunks(parts)
    return chunks[0] if len(chunks) == 1 else pa.chunked_array(chunks)


def json_texts(texts: list[bytes]) -> pa.Array:
    """JSON texts as a string array. Built as binary, then viewed as string: pyarrow converts a
    list of bytes straight to `string` about 15x slower, and a cast validates the UTF-8 again
    (48 vs 18.5 ms for 16,384 texts of 4 KB). Every text here is orjson's output (`dumps`), UTF-8
    by construction."""
    return pa.array(texts, pa.binary()).view(pa.string())


class ArrowColumn(LazyColumn):
    """A column of scalars (ids, names, times, enum codes) as an Arrow array; read, it is the list
    of Python values the decoder would have made, built once."""

    __slots__ = ("array", "_list")

    def __init__(self, array: Arrowish) -> None:
        self.array = array
        self._list: list[Any] | None = None

    def values(self) -> list[Any]:
        if self._list is None:
            self._list = self.array.to_pylist()
        return self._list

    def __len__(self) -> int:
        return len(self.array)

    def __contains__(self, value: object) -> bool:
        if self._list is None and isinstance(value, str) and pa.types.is_string(self.array.type):
            return pc.index(self.array, value).as_py() >= 0
        return value in self.values()

    def take(self, indices: list[int]) -> ArrowColumn:
        return ArrowColumn(self.array.take(indices))

    @classmethod
    def concat(cls, parts: Sequence[LazyColumn]) -> ArrowColumn:
        return cls(_concat([p.array for p in parts]))  # type: ignore[attr-defined]

    def __reduce__(self) -> tuple[Any, ...]:
        return ArrowColumn, (self.array,)


class JsonColumn(LazyColumn):
    """Attributes, events or links as their stored JSON texts (an Arrow string array); read, each
    becomes its Python value in one `orjson.loads` over the column. `exact` holds the values whose
    JSON would not give them back (bytes, NaN); `empty_is_none` reads "[]" as None (no events)."""

    __slots__ = ("texts", "exact", "empty_is_none", "_values")

    def __init__(self, texts: Arrowish, exact: dict[int, Any], empty_is_none: bool,
                 values: list[Any] | None = None) -> None:
        self.texts, self.exact, self.empty_is_none, self._values = texts, exact, empty_is_none, values

    def values(self) -> list[Any]:
        if self._values is None:
            out: list[Any] = []
            for chunk in _chunks([self.texts]):
                if len(chunk):
                    joined = pc.binary_join(pa.ListArray.from_arrays([0, len(chunk)], chunk), ",")[0]
                    out.extend(orjson.loads(b"[" + joined.as_buffer().to_pybytes() + b"]"))
            if self.empty_is_none:
                out = [v or None for v in out]
            for i, v in self.exact.items():
                out[i] = v
            self._values = out
        return self._values

    def __len__(self) -> int:
        return len(self.texts)

    def rows_that_may_hold(self, keys: Sequence[str]) -> list[int] | None:
        """The rows whose object may have one of `keys` (JSON as `dumps` writes it: a key is in its
        text as `"key"`), found in the texts without reading them; the others surely have none. None
        when the texts cannot tell: a key JSON would escape."""
        if not all(_PLAIN_KEY.fullmatch(k) for k in keys):
            return None
        # One RE2 pass (Arrow's plain substring search is ~15x slower per key).
        pattern = '"(?:' + "|".join(k.replace(".", r"\.") for k in keys) + ')"'
        rows = set(self.exact)
        rows.update(pc.indices_nonzero(pc.match_substring_regex(self.texts, pattern)).to_pylist())
        return sorted(rows)

    def value_at(self, i: int) -> Any:
        """The value at `i`, read alone (the column's other texts stay unread)."""
        if self._values is not None:
            return self._values[i]
        if i in self.exact:
            return self.exact[i]
        value = orjson.loads(self.texts[i].as_py())
        return (value or None) if self.empty_is_none else value

    def with_changes(self, changes: dict[int, Any]) -> JsonColumn:
        """Only the changed values are encoded; the other texts are kept as they are."""
        if not changes:
            return self
        order = sorted(changes)
        texts, changed_exact = _encode_json([changes[i] for i in order], self.empty_is_none)
        exact = {i: v for i, v in self.exact.items() if i not in changes}
        exact.update({order[k]: v for k, v in changed_exact.items()})
        mask = [False] * len(self)
        for i in order:
            mask[i] = True
        replaced = pc.replace_with_mask(self.texts, pa.array(mask, pa.bool_()), texts)
        values = None
        if self._values is not None:
            values = list(self._values)
            for i in order:
                values[i] = changes[i]
        return JsonColumn(replaced, exact, self.empty_is_none, values)

    def take(self, indices: list[int]) -> JsonColumn:
        where = {old: new for new, old in enumerate(indices)}
        exact = {where[i]: v for i, v in self.exact.items() if i in where}
        values = None if self._values is None else [self._values[i] for i in indices]
        return JsonColumn(self.texts.take(indices), exact, self.empty_is_none, values)

    @classmethod
    def concat(cls, parts: Sequence[LazyColumn]) -> JsonColumn:
        cols: list[JsonColumn] = list(parts)  # type: ignore[arg-type]
        exact: dict[int, Any] = {}
        offset = 0
        for col in cols:
            exact.update({offset + i: v for i, v in col.exact.items()})
            offset += len(col)
        values = None
        if all(c._values is not None for c in cols):
            values = [v for c in cols for v in c._values]  # type: ignore[union-attr]
        return cls(_concat([c.texts for c in cols]), exact, cols[0].empty_is_none, values)

    def __reduce__(self) -> tuple[Any, ...]:
        return JsonColumn, (self.texts, self.exact, self.empty_is_none)


def _encode_json(values: Sequence[Any], empty_is_none: bool) -> tuple[pa.Array, dict[int, Any]]:
    texts: list[bytes] = []
    exact: dict[int, Any] = {}
    for i, v in enumerate(values):
        if empty_is_none and not v:
            texts.append(EMPTY_JSON_LIST)
            continue
        text, faithful = dumps_exact(v)
        texts.append(text)
        if not faithful:
            exact[i] = v
    return json_texts(texts), exact


def to_record_batch(batch: SpanBatch) -> tuple[pa.RecordBatch, dict[str, dict[int, Any]]]:
    """The batch's per-span columns as one record batch (JSON columns encoded), and the values of
    each JSON column that its JSON does not give back."""
    arrays = [_single(arrow_of(getattr(batch, c), t)) for c, t in SCALAR_COLUMNS.items()]
    exact: dict[str, dict[int, Any]] = {}
    for c, empty_is_none in JSON_COLUMNS.items():
        values = getattr(batch, c)
        if isinstance(values, JsonColumn):  # decoded into Arrow already (spanpipe.otlp_columns)
            texts, exact[c] = _single(values.texts), values.exact
        else:
            texts, exact[c] = _encode_json(values, empty_is_none)
        arrays.append(texts)
    return pa.RecordBatch.from_arrays(arrays, [*SCALAR_COLUMNS, *JSON_COLUMNS]), exact


def _single(array: Arrowish) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def from_record_batch(record: pa.RecordBatch, exact: dict[str, dict[int, Any]]) -> dict[str, LazyColumn]:
    """The SpanBatch columns (as keyword arguments) of a record batch `to_record_batch` made."""
    cols: dict[str, LazyColumn] = {c: ArrowColumn(record.column(c)) for c in SCALAR_COLUMNS}
    for c, empty_is_none in JSON_COLUMNS.items():
        cols[c] = JsonColumn(record.column(c), exact.get(c, {}), empty_is_none)
    return cols


def json_array(values: Sequence[Any], empty: bytes | None) -> Arrowish:
    """`values` as the stored JSON string column: a JsonColumn's texts as they are, else encoded;
    `empty` stands for a falsy value when given."""
    if isinstance(values, JsonColumn):
        return values.texts
    if empty is None:
        return json_texts([dumps(v) for v in values])
    return json_texts([dumps(v) if v else empty for v in values])


def arrow_of(values: Sequence[Any], typ: pa.DataType) -> Arrowish:
    """A scalar column as Arrow: an ArrowColumn's array as it is, else converted."""
    if isinstance(values, ArrowColumn):
        return values.array
    return pa.array(values, typ)


def arrow_at(values: Sequence[Any], rows: list[int], typ: pa.DataType) -> Arrowish:
    """A scalar column's values at `rows` as Arrow: an ArrowColumn's taken there (never made into
    Python values), else converted."""
    if isinstance(values, ArrowColumn):
        return pc.take(values.array, pa.array(rows, pa.int64())).cast(typ)
    return pa.array([values[i] for i in rows], typ)
