"""A SpanBatch as Arrow: the warehouse's `spans` table and the `reward_dimensions` rows.

Apart from spanbatch so that a process that makes batches without writing them (the LLM gateway's
proxy processes) does not load pyarrow: about 40 MiB of memory in each such process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from spanpipe import columns
from spanpipe.arrowcolumn import ArrowColumn, arrow_at, arrow_of, json_array, json_texts
from spanpipe.spanbatch import EMPTY_JSON_LIST, KIND_NAMES, STATUS_NAMES, SpanBatch, dumps

# Columns filled by processors (rollout, reward); NULL when no processor set them.
PROMOTED_COLUMNS: dict[str, pa.DataType] = columns.promoted()

_KIND_DICT = pa.array(KIND_NAMES)
_STATUS_DICT = pa.array(STATUS_NAMES)


def _enum_column(values: Sequence[int], names: tuple[str, ...], dictionary: pa.Array) -> pa.DictionaryArray:
    if isinstance(values, ArrowColumn):
        codes = values.array
        if isinstance(codes, pa.ChunkedArray):
            codes = codes.combine_chunks()
        bounds = pc.min_max(codes).as_py()
        if not len(codes) or (bounds["min"] >= 0 and bounds["max"] < len(names)):
            return pa.DictionaryArray.from_arrays(codes, dictionary)
    values = list(values)
    if not values or (min(values) >= 0 and max(values) < len(names)):
        return pa.DictionaryArray.from_arrays(pa.array(values, pa.int32()), dictionary)
    odd = sorted({v for v in values if not 0 <= v < len(names)})
    code = {v: len(names) + i for i, v in enumerate(odd)}
    indices = [v if 0 <= v < len(names) else code[v] for v in values]
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()),
                                          pa.array([*names, *(str(v) for v in odd)]))


def reward_dimensions_table(batch: SpanBatch) -> pa.Table | None:
    """Rows (trace_id, span_id, idx, name, value, source) of the `reward_dimensions` column. The ids
    are taken at the few rewarded rows only: a batch's id columns (from a decode worker, Arrow) are
    never turned into Python strings for this."""
    col = batch.extra.get("reward_dimensions")
    if not col:
        return None
    rows: list[int] = []
    fields: dict[str, list[Any]] = {"idx": [], "name": [], "value": [], "source": []}
    for i, dims in enumerate(col):
        for idx, d in enumerate(dims or ()):
            rows.append(i)
            fields["idx"].append(idx)
            fields["name"].append(d["name"])
            fields["value"].append(d["value"])
            fields["source"].append(d["source"])
    if not rows:
        return None
    text = pa.string()
    return pa.table({"trace_id": arrow_at(batch.trace_id, rows, text), "span_id": arrow_at(batch.span_id, rows, text),
                     "idx": pa.array(fields["idx"], pa.int32()), "name": pa.array(fields["name"], text),
                     "value": pa.array(fields["value"], pa.float64()), "source": pa.array(fields["source"], text)})


def spans_table(batch: SpanBatch) -> pa.Table:
    """The batch as an Arrow table with the warehouse `spans` columns (ARCHITECTURE.md#the-warehouse)."""
    n = len(batch)
    res_index = pa.array(batch.resource_index, pa.int32())
    res_json = json_texts([dumps(r.attributes) for r in batch.resources])
    res_service = pa.array([r.service_name for r in batch.resources], pa.string())
    start = arrow_of(batch.start_time_unix_nano, pa.int64())
    end = arrow_of(batch.end_time_unix_nano, pa.int64())
    text = pa.string()
    cols: dict[str, Any] = {
        "trace_id": arrow_of(batch.trace_id, text),
        "span_id": arrow_of(batch.span_id, text),
        "parent_span_id": arrow_of(batch.parent_span_id, text),
        "trace_state": arrow_of(batch.trace_state, text),
        "name": arrow_of(batch.name, text),
        "kind": _enum_column(batch.kind, KIND_NAMES, _KIND_DICT),
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "duration_ns": pc.subtract(end, start),
        "status_code": _enum_column(batch.status_code, STATUS_NAMES, _STATUS_DICT),
        "status_message": arrow_of(batch.status_message, text),
        "service_name": pa.DictionaryArray.from_arrays(res_index, res_service),
        "scope_name": arrow_of(batch.scope_name, text),
        "scope_version": arrow_of(batch.scope_version, text),
        "attributes": json_array(batch.attributes, None),
        "resource_attributes": pa.DictionaryArray.from_arrays(res_index, res_json),
        "events": json_array(batch.events, EMPTY_JSON_LIST),
        "links": json_array(batch.links, EMPTY_JSON_LIST),
    }
    for col, typ in PROMOTED_COLUMNS.items():
        values = batch.extra.get(col)
        cols[col] = pa.array(values, typ) if values is not None else pa.nulls(n, typ)
    return pa.table(cols)
