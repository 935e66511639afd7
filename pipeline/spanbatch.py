"""SpanBatch: the columnar unit that flows from receivers through processors into exporters.

One sequence per column, so that processors work column-wise and exporters hand the batch to Arrow
in bulk. A column is a list, or — from a decode worker — Arrow arrays that become that list when
read (`LazyColumn`, spanpipe.arrowcolumn). Attributes are plain dicts that keep their value types.
Resource attributes are stored once per resource in `resources`; each span points at its resource
by index.

Rule for processors: never mutate a column list in place (a batch may be shared by several
pipelines when a receiver fans out); build a new column and use `with_columns`/`take`, or
`with_changes` for a column of which a few spans change (the rest keep the form they came in).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field, replace
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

if TYPE_CHECKING:
    import pyarrow as pa

KIND_NAMES = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_NAMES = ("UNSET", "OK", "ERROR")
KIND_INTERNAL, KIND_CLIENT = KIND_NAMES.index("INTERNAL"), KIND_NAMES.index("CLIENT")
STATUS_UNSET, STATUS_OK, STATUS_ERROR = range(3)


def enum_name(names: tuple[str, ...], value: int) -> str:
    """The name of an OTLP enum value; a value outside the enum (valid protobuf: proto3 enums are
    open) keeps its number, as otelcol passes it through."""
    return names[value] if 0 <= value < len(names) else str(value)


@dataclass(slots=True)
class Resource:
    attributes: dict[str, Any]
    service_name: str | None
    schema_url: str = ""


# Decoded into Python objects, a span request takes about 8x its protobuf size (measured with
# tracemalloc on SDK-like spans: 7.0 MB for 0.87 MB of protobuf).
DECODED_BYTES_PER_WIRE_BYTE = 8


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot store {type(value).__name__} in a JSON column")


_OPT = orjson.OPT_NON_STR_KEYS
EMPTY_JSON_LIST = b"[]"


def _with_nonfinite_as_text(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _with_nonfinite_as_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_with_nonfinite_as_text(v) for v in value]
    return value


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_nonfinite(v) for v in value)
    return False


def dumps(value: Any) -> bytes:
    """JSON as stored in the warehouse: exact ints, doubles as doubles, bytes as base64, and NaN /
    ±Infinity (which JSON cannot hold) as the OTLP/JSON strings "NaN", "Infinity", "-Infinity"."""
    out = orjson.dumps(value, default=_json_default, option=_OPT)
    if b"null" in out and _has_nonfinite(value):  # orjson wrote them as null
        out = orjson.dumps(_with_nonfinite_as_text(value), default=_json_default, option=_OPT)
    return out


def dumps_exact(value: Any) -> tuple[bytes, bool]:
    """(dumps(value), whether orjson.loads of it gives `value` back): not so when it holds bytes
    (stored as base64 text) or NaN / ±Infinity (stored as text)."""
    try:
        out = orjson.dumps(value, option=_OPT)
    except TypeError:
        return dumps(value), False
    if b"null" in out and _has_nonfinite(value):
        return dumps(value), False
    return out, True


class LazyColumn(Sequence[Any]):
    """A column held in another form than a list (Arrow arrays from a decode worker:
    spanpipe.arrowcolumn) that becomes the list of Python values when read. Not a list on purpose:
    code that needs one makes it by iterating. `take` and `concat` keep the form."""

    __slots__ = ()

    def values(self) -> list[Any]:
        """The column's Python values, made once."""
        raise NotImplementedError

    def __getitem__(self, index):  # type: ignore[override]
        return self.values()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values())

    def take(self, indices: list[int]) -> LazyColumn:
        raise NotImplementedError

    @classmethod
    def concat(cls, parts: Sequence[LazyColumn]) -> LazyColumn:
        raise NotImplementedError

    def with_changes(self, changes: dict[int, Any]) -> Sequence[Any]:
        """The column with the values at some indices replaced (`changes`: index → new value)."""
        return _changed_list(self, changes)

    def rows_that_may_hold(self, keys: Sequence[str]) -> list[int] | None:
        """For a column of mappings: the rows whose mapping may have one of `keys` (the others
        surely have none), when the column can tell without reading its values; else None."""
        return None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, LazyColumn)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def values_of(column: Sequence[Any]) -> Sequence[Any]:
    """A column's values as a list, without a call per item (a LazyColumn's, read once)."""
    return column.values() if isinstance(column, LazyColumn) else column


def rows_that_may_hold(column: Sequence[Any], keys: Sequence[str]) -> list[int] | None:
    """LazyColumn.rows_that_may_hold, for any column (a list cannot tell: None)."""
    return column.rows_that_may_hold(keys) if isinstance(column, LazyColumn) else None


def with_changes(column: Sequence[Any], changes: dict[int, Any]) -> Sequence[Any]:
    """A new column: `column` with the values at some indices replaced (`changes`: index → new
    value). A processor that changes a few spans keeps the rest as they came (a decode worker's
    JSON is stored as it is, not encoded again)."""
    if isinstance(column, LazyColumn):
        return column.with_changes(changes)
    return _changed_list(column, changes)


def _changed_list(column: Sequence[Any], changes: dict[int, Any]) -> list[Any]:
    values = list(column)
    for i, v in changes.items():
        values[i] = v
    return values


def _take(column: Sequence[Any], indices: list[int]) -> Sequence[Any]:
    return column.take(indices) if isinstance(column, LazyColumn) else [column[i] for i in indices]


def _concat(parts: list[Sequence[Any]]) -> Sequence[Any]:
    kind = type(parts[0])
    if issubclass(kind, LazyColumn) and all(type(p) is kind for p in parts):
        return kind.concat(parts)  # type: ignore[arg-type]
    return [v for p in parts for v in p]


@dataclass(slots=True)
class SpanBatch:
    trace_id: list[str] = field(default_factory=list)
    span_id: list[str] = field(default_factory=list)
    parent_span_id: list[str | None] = field(default_factory=list)
    trace_state: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    start_time_unix_nano: list[int] = field(default_factory=list)
    end_time_unix_nano: list[int] = field(default_factory=list)
    status_code: list[int] = field(default_factory=list)
    status_message: list[str] = field(default_factory=list)
    scope_name: list[str] = field(default_factory=list)
    scope_version: list[str] = field(default_factory=list)
    attributes: list[dict[str, Any]] = field(default_factory=list)
    events: list[list[dict[str, Any]] | None] = field(default_factory=list)
    links: list[list[dict[str, Any]] | None] = field(default_factory=list)
    resource_index: list[int] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    # Columns added by processors, e.g. rollout_id; each list is as long as the batch.
    extra: dict[str, list[Any]] = field(default_factory=dict)
    # The sending client's gRPC metadata / HTTP headers (lower-case keys), kept by receivers with
    # `include_metadata: true`, for the batch processor's `metadata_keys`.
    client_metadata: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Memory the batch holds, estimated once when it is decoded (the memory limiter's unit).
    nbytes: int = 0
    # Results of processors' per-span derivations computed by a decode worker (spanpipe.derived);
    # take() and concat() leave them behind (new columns): processors then compute again.
    derived: dict[str, Any] = field(default_factory=dict)

    signal: ClassVar[str] = "traces"
    unit: ClassVar[str] = "spans"  # what counters call one item

    CORE = (
        "trace_id", "span_id", "parent_span_id", "trace_state", "name", "kind",
        "start_time_unix_nano", "end_time_unix_nano", "status_code", "status_message",
        "scope_name", "scope_version", "attributes", "events", "links",
    )

    def __len__(self) -> int:
        return len(self.span_id)

    def append_span(self, trace_id: str, span_id: str, parent_span_id: str | None, name: str, kind: int,
                    start: int, end: int, status_code: int, status_message: str, scope_name: str,
                    scope_version: str, attributes: dict[str, Any], resource_index: int = 0) -> None:
        """One span a component makes itself (a gateway call, a completion), no events or links."""
        self.trace_id.append(trace_id)
        self.span_id.append(span_id)
        self.parent_span_id.append(parent_span_id)
        self.trace_state.append("")
        self.name.append(name)
        self.kind.append(kind)
        self.start_time_unix_nano.append(start)
        self.end_time_unix_nano.append(end)
        self.status_code.append(status_code)
        self.status_message.append(status_message)
        self.scope_name.append(scope_name)
        self.scope_version.append(scope_version)
        self.attributes.append(attributes)
        self.events.append(None)
        self.links.append(None)
        self.resource_index.append(resource_index)

    def with_columns(self, **extra: list[Any]) -> SpanBatch:
        """A new batch sharing this one's columns, with extra columns set or replaced."""
        return replace(self, extra={**self.extra, **extra})

    def slice(self, start: int, stop: int) -> SpanBatch:
        return self.take(list(range(start, stop)))

    def take(self, indices: list[int]) -> SpanBatch:
        """A new batch with only the spans at `indices` (in that order)."""
        cols = {c: _take(getattr(self, c), indices) for c in self.CORE}
        extra = {k: [v[i] for i in indices] for k, v in self.extra.items()}
        res_map: dict[int, int] = {}
        resources: list[Resource] = []
        new_index = []
        for i in indices:
            r = self.resource_index[i]
            if r not in res_map:
                res_map[r] = len(resources)
                resources.append(self.resources[r])
            new_index.append(res_map[r])
        return SpanBatch(**cols, resource_index=new_index, resources=resources, extra=extra,  # type: ignore[arg-type]
                         client_metadata=self.client_metadata,
                         nbytes=self.nbytes * len(indices) // max(len(self), 1))

    @staticmethod
    def concat(batches: list[SpanBatch]) -> SpanBatch:
        if len(batches) == 1:
            return batches[0]
        out = SpanBatch()
        if all(b.client_metadata == batches[0].client_metadata for b in batches):
            out.client_metadata = batches[0].client_metadata
        for c in SpanBatch.CORE:
            setattr(out, c, _concat([getattr(b, c) for b in batches]))
        extra_keys: set[str] = set()
        for b in batches:
            extra_keys.update(b.extra)
        out.extra = {k: [] for k in extra_keys}
        out.nbytes = sum(b.nbytes for b in batches)
        for b in batches:
            offset = len(out.resources)
            out.resources.extend(b.resources)
            out.resource_index.extend([i + offset for i in b.resource_index])
            n = len(b)
            for k in extra_keys:
                out.extra[k].extend(b.extra.get(k) or [None] * n)
        return out

    def resource_attributes(self, i: int) -> dict[str, Any]:
        return self.resources[self.resource_index[i]].attributes

    def reward_dimensions_arrow(self) -> pa.Table | None:
        """Rows (trace_id, span_id, idx, name, value, source) of the `reward_dimensions` column."""
        from spanpipe.spanbatch_arrow import reward_dimensions_table

        return reward_dimensions_table(self)

    def to_arrow(self) -> pa.Table:
        """The batch as an Arrow table with the warehouse `spans` columns (ARCHITECTURE.md#the-warehouse)."""
        from spanpipe.spanbatch_arrow import spans_table

        return spans_table(self)
