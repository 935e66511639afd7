"""A SpanBatch as Arrow: the warehouse's `spans` table and the `reward_dimensions` rows.

Apart from spanbatch so that what only decodes batches (the decode workers) does not load pyarrow:
about 50 MiB of memory in each such process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from spanpipe import columns
from spanpipe.spanbatch import EMPTY_JSON_LIST, KIND_NAMES, STATUS_NAMES, SpanBatch, dumps

# Columns filled by processors (rollout, reward); NULL when no processor set them.
PROMOTED_COLUMNS: dict[str, pa.DataType] = columns.promoted()

_KIND_DICT = pa.array(KIND_NAMES)
_STATUS_DICT = pa.array(STATUS_NAMES)


def _enum_column(values: list[int], names: tuple[str, ...], dictionary: pa.Array) -> pa.DictionaryArray:
    if not values or (min(values) >= 0 and max(values) < len(names)):
        return pa.DictionaryArray.from_arrays(pa.array(values, pa.int32()), dictionary)
    odd = sorted({v for v in values if not 0 <= v < len(names)})
    code = {v: len(names) + i for i, v in enumerate(odd)}
    indices = [v if 0 <= v < len(names) else code[v] for v in values]
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()),
                                          pa.array([*names, *(str(v) for v in odd)]))


def _json_array(texts: list[bytes | None]) -> pa.Array:
    """JSON texts as a string array. Built as binary, then viewed as string: pyarrow converts a
    list of bytes straight to `string` about 15x slower, and a cast validates the UTF-8 again
    (48 vs 18.5 ms for 16,384 texts of 4 KB). Every text here is orjson's output (`dumps`), UTF-8
    by construction."""
    return pa.array(texts, pa.binary()).view(pa.string())


def _json_column(values: Sequence[Any], texts: list[bytes] | None, empty: bytes | None) -> pa.Array:
    """`values` as a JSON string column, from `texts` when they were made already; `empty` stands
    for a falsy value when given."""
    if texts is not None:
        return _json_array(texts)  # type: ignore[arg-type]
    if empty is None:
        return _json_array([dumps(v) for v in values])
    return _json_array([dumps(v) if v else empty for v in values])


def reward_dimensions_table(batch: SpanBatch) -> pa.Table | None:
    """Rows (trace_id, span_id, idx, name, value, source) of the `reward_dimensions` column."""
    col = batch.extra.get("reward_dimensions")
    if not col:
        return None
    rows: dict[str, list[Any]] = {k: [] for k in ("trace_id", "span_id", "idx", "name", "value", "source")}
    for i, dims in enumerate(col):
        for idx, d in enumerate(dims or ()):
            rows["trace_id"].append(batch.trace_id[i])
            rows["span_id"].append(batch.span_id[i])
            rows["idx"].append(idx)
            rows["name"].append(d["name"])
            rows["value"].append(d["value"])
            rows["source"].append(d["source"])
    if not rows["idx"]:
        return None
    return pa.table({k: pa.array(v, pa.int32() if k == "idx" else pa.float64() if k == "value" else pa.string())
                     for k, v in rows.items()})


def spans_table(batch: SpanBatch) -> pa.Table:
    """The batch as an Arrow table with the warehouse `spans` columns (ARCHITECTURE.md#the-warehouse)."""
    n = len(batch)
    res_index = pa.array(batch.resource_index, pa.int32())
    res_json = _json_array([dumps(r.attributes) for r in batch.resources])
    res_service = pa.array([r.service_name for r in batch.resources], pa.string())
    start = pa.array(batch.start_time_unix_nano, pa.int64())
    end = pa.array(batch.end_time_unix_nano, pa.int64())
    cols: dict[str, pa.Array] = {
        "trace_id": pa.array(batch.trace_id, pa.string()),
        "span_id": pa.array(batch.span_id, pa.string()),
        "parent_span_id": pa.array(batch.parent_span_id, pa.string()),
        "trace_state": pa.array(batch.trace_state, pa.string()),
        "name": pa.array(batch.name, pa.string()),
        "kind": _enum_column(batch.kind, KIND_NAMES, _KIND_DICT),
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "duration_ns": pc.subtract(end, start),
        "status_code": _enum_column(batch.status_code, STATUS_NAMES, _STATUS_DICT),
        "status_message": pa.array(batch.status_message, pa.string()),
        "service_name": pa.DictionaryArray.from_arrays(res_index, res_service),
        "scope_name": pa.array(batch.scope_name, pa.string()),
        "scope_version": pa.array(batch.scope_version, pa.string()),
        "attributes": _json_column(batch.attributes, batch.encoded_texts("attributes"), None),
        "resource_attributes": pa.DictionaryArray.from_arrays(res_index, res_json),
        "events": _json_column(batch.events, batch.encoded_texts("events"), EMPTY_JSON_LIST),
        "links": _json_column(batch.links, batch.encoded_texts("links"), EMPTY_JSON_LIST),
    }
    for col, typ in PROMOTED_COLUMNS.items():
        values = batch.extra.get(col)
        cols[col] = pa.array(values, typ) if values is not None else pa.nulls(n, typ)
    return pa.table(cols)
