"""SpanBatch: the columnar unit that flows from receivers through processors into exporters.

One list per column, so that processors work column-wise and exporters hand the batch to Arrow in
bulk. Attributes stay plain dicts that keep their value types (from a decode worker: a
JsonAttributes column that makes those dicts when read). Resource attributes are stored
once per resource in `resources`; each span points at its resource by index.

Rule for processors: never mutate a column list in place (a batch may be shared by several
pipelines when a receiver fans out); build a new list and use `with_columns`/`take`.
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


class JsonAttributes(Sequence[dict[str, Any]]):
    """An attributes column that arrived as JSON (from a decode worker) and becomes dicts only when
    something reads it: in a pipeline whose processors take what they need from derivations
    (spanpipe.derived), the collector process never builds them, and the writer stores the JSON.

    `texts[i]` is span i's attributes as stored (`dumps`); `exact` holds the decoded dicts of the
    spans whose JSON would not give their values back (bytes, NaN): those are used as they are.
    Not a list on purpose: code that needs one makes it by iterating, so nothing reads an
    unfilled list."""

    __slots__ = ("texts", "exact", "_dicts")

    def __init__(self, texts: list[bytes], exact: dict[int, dict[str, Any]],
                 dicts: list[dict[str, Any]] | None = None) -> None:
        self.texts, self.exact, self._dicts = texts, exact, dicts

    def dicts(self) -> list[dict[str, Any]]:
        if self._dicts is None:
            dicts = orjson.loads(b"[" + b",".join(self.texts) + b"]") if self.texts else []
            for i, d in self.exact.items():
                dicts[i] = d
            self._dicts = dicts
        return self._dicts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index):  # type: ignore[override]
        return self.dicts()[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.dicts())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, JsonAttributes)):
            return self.dicts() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return JsonAttributes, (self.texts, self.exact)

    def take(self, indices: list[int]) -> JsonAttributes:
        where = {old: new for new, old in enumerate(indices)}
        exact = {where[i]: d for i, d in self.exact.items() if i in where}
        dicts = None if self._dicts is None else [self._dicts[i] for i in indices]
        return JsonAttributes([self.texts[i] for i in indices], exact, dicts)

    @staticmethod
    def concat(columns: list[JsonAttributes]) -> JsonAttributes:
        texts: list[bytes] = []
        exact: dict[int, dict[str, Any]] = {}
        for col in columns:
            exact.update({len(texts) + i: d for i, d in col.exact.items()})
            texts.extend(col.texts)
        dicts = None
        if all(c._dicts is not None for c in columns):
            dicts = [d for c in columns for d in c._dicts]  # type: ignore[union-attr]
        return JsonAttributes(texts, exact, dicts)


JSON_COLUMNS = ("events", "links")


@dataclass(slots=True)
class EncodedJson:
    """The JSON of the events and links columns, made where the batch was decoded (a decode worker
    process), so that the process that writes the batch does not encode it again.

    A column's JSON is used while the batch still holds the very list it was made from: a processor
    that changes events or links replaces the list (see the rule above), and that column is then
    encoded again."""

    columns: dict[str, tuple[list[Any], list[bytes]]]  # column -> (the list encoded, its JSON texts)

    def texts(self, batch: SpanBatch, column: str) -> list[bytes] | None:
        entry = self.columns.get(column)
        return entry[1] if entry is not None and getattr(batch, column) is entry[0] else None

    def take(self, indices: list[int], batch: SpanBatch, taken: dict[str, list[Any]]) -> EncodedJson:
        """For `batch.take(indices)`, whose new columns are `taken`."""
        return EncodedJson({c: (taken[c], [texts[i] for i in indices]) for c in JSON_COLUMNS
                            if (texts := self.texts(batch, c)) is not None})

    @staticmethod
    def concat(batches: list[SpanBatch], merged: SpanBatch) -> EncodedJson | None:
        """For `merged = SpanBatch.concat(batches)`."""
        columns = {}
        for c in JSON_COLUMNS:
            parts = [b.encoded.texts(b, c) if b.encoded is not None else None for b in batches]
            if all(p is not None for p in parts):
                columns[c] = (getattr(merged, c), [t for p in parts for t in p])  # type: ignore[union-attr]
        return EncodedJson(columns) if columns else None


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
    attributes: list[dict[str, Any]] | JsonAttributes = field(default_factory=list)
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
    # JSON of the attributes/events/links columns made by a decode worker (see EncodedJson).
    encoded: EncodedJson | None = None
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
        cols = {c: [getattr(self, c)[i] for i in indices] for c in self.CORE if c != "attributes"}
        attrs = self.attributes
        cols["attributes"] = attrs.take(indices) if isinstance(attrs, JsonAttributes) else [attrs[i] for i in indices]
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
        return SpanBatch(**cols, resource_index=new_index, resources=resources, extra=extra,
                         client_metadata=self.client_metadata,
                         nbytes=self.nbytes * len(indices) // max(len(self), 1),
                         encoded=self.encoded.take(indices, self, cols) if self.encoded is not None else None)

    @staticmethod
    def concat(batches: list[SpanBatch]) -> SpanBatch:
        if len(batches) == 1:
            return batches[0]
        out = SpanBatch()
        if all(b.client_metadata == batches[0].client_metadata for b in batches):
            out.client_metadata = batches[0].client_metadata
        extra_keys: set[str] = set()
        for b in batches:
            extra_keys.update(b.extra)
        out.extra = {k: [] for k in extra_keys}
        out.nbytes = sum(b.nbytes for b in batches)
        if all(isinstance(b.attributes, JsonAttributes) for b in batches):
            out.attributes = JsonAttributes.concat([b.attributes for b in batches])  # type: ignore[misc]
        else:
            for b in batches:
                out.attributes.extend(b.attributes)  # type: ignore[union-attr]
        for b in batches:
            for c in SpanBatch.CORE:
                if c != "attributes":
                    getattr(out, c).extend(getattr(b, c))
            offset = len(out.resources)
            out.resources.extend(b.resources)
            out.resource_index.extend([i + offset for i in b.resource_index])
            n = len(b)
            for k in extra_keys:
                out.extra[k].extend(b.extra.get(k) or [None] * n)
        out.encoded = EncodedJson.concat(batches, out)
        return out

    def encode_json(self) -> None:
        """Encode the attributes, events and links columns now (in a decode worker): the attributes
        become a JsonAttributes column, events and links keep their JSON in `encoded`."""
        texts: list[bytes] = []
        exact: dict[int, dict[str, Any]] = {}
        for i, attrs in enumerate(self.attributes):
            text, faithful = dumps_exact(attrs)
            texts.append(text)
            if not faithful:
                exact[i] = attrs
        self.attributes = JsonAttributes(texts, exact)
        self.encoded = EncodedJson({c: (getattr(self, c), [dumps(v) if v else EMPTY_JSON_LIST for v in getattr(self, c)])
                                    for c in JSON_COLUMNS})

    def encoded_texts(self, column: str) -> list[bytes] | None:
        """The JSON of `column` made by a decode worker, while the batch still holds what it was made from."""
        if column == "attributes":
            return self.attributes.texts if isinstance(self.attributes, JsonAttributes) else None
        return self.encoded.texts(self, column) if self.encoded is not None else None

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
