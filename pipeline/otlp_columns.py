"""OTLP trace requests decoded by the compiled decoder straight into Arrow columns.

`spanpipe._otlp_columns` (C, built with the package) reads the protobuf wire format and writes the
buffers of the columns a decode worker ships (spanpipe.arrowcolumn): ids in hex, attributes, events
and links as the JSON the warehouse stores. It makes no Python object per span or attribute, which
was most of a worker's time (upb message objects, dicts, then their JSON). The batch it gives reads
like any worker-decoded batch: a processor that reads a column gets its Python values then.

It decodes only what it decodes exactly as spanpipe.otlp does; any other request (a span to
reject, bytes or NaN attribute values, a repeated key, malformed input) goes to spanpipe.otlp,
whose answer is the reference. Where the extension could not be built, every request does.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pyarrow as pa

from spanpipe.arrowcolumn import JSON_COLUMNS, SCALAR_COLUMNS, from_record_batch
from spanpipe.otlp import DecodedTraces, decode_traces_json, decode_traces_protobuf
from spanpipe.spanbatch import DECODED_BYTES_PER_WIRE_BYTE, Resource, SpanBatch

try:
    from spanpipe import _otlp_columns
except ImportError:  # built without a C compiler: the Python decoder decodes everything
    _otlp_columns = None  # type: ignore[assignment]
    logging.getLogger("spanpipe.otlp").warning(
        "the compiled OTLP decoder is not built (reinstall spanpipe with a C compiler); "
        "trace requests are decoded in Python, at about twice a decode worker's CPU per span")

# The order of the extension's columns (its `decode` docstring).
_STRINGS = ("trace_id", "span_id", "parent_span_id", "trace_state", "name", "status_message",
            "scope_name", "scope_version", "attributes", "events", "links")
_INTS = (("kind", pa.int32()), ("status_code", pa.int32()), ("resource_index", pa.int32()),
         ("start_time_unix_nano", pa.int64()), ("end_time_unix_nano", pa.int64()))
_ORDER = (*SCALAR_COLUMNS, *JSON_COLUMNS)


def compiled() -> bool:
    """Whether the compiled decoder is there."""
    return _otlp_columns is not None


def _string_array(n: int, column: tuple[bytes, bytes, bytes | None, int]) -> pa.Array:
    offsets, data, validity, nulls = column
    return pa.Array.from_buffers(pa.string(), n, [None if validity is None else pa.py_buffer(validity),
                                                  pa.py_buffer(offsets), pa.py_buffer(data)], null_count=nulls)


def decode_columns(data: bytes) -> DecodedTraces | None:
    """The request as a batch of Arrow-backed columns, or None when spanpipe.otlp must decode it."""
    if _otlp_columns is None:
        return None
    decoded: Any = _otlp_columns.decode(data)
    if decoded is None:
        return None
    n, strings, ints, resources = decoded
    arrays = {name: _string_array(n, col) for name, col in zip(_STRINGS, strings)}
    arrays.update({name: pa.Array.from_buffers(typ, n, [None, pa.py_buffer(buf)])
                   for (name, typ), buf in zip(_INTS, ints)})
    resource_index = arrays.pop("resource_index").to_pylist()
    record = pa.RecordBatch.from_arrays([arrays[c] for c in _ORDER], list(_ORDER))
    kept = []
    for attributes_json, schema_url in resources:
        attributes = orjson.loads(attributes_json)
        service = attributes.get("service.name")
        kept.append(Resource(attributes, service if isinstance(service, str) else None, schema_url))
    batch = SpanBatch(**from_record_batch(record, {}), resource_index=resource_index,  # type: ignore[arg-type]
                      resources=kept, nbytes=len(data) * DECODED_BYTES_PER_WIRE_BYTE)
    return DecodedTraces(batch, 0, "")


def decode_traces(body: bytes, json: bool = False) -> DecodedTraces:
    """A trace request (protobuf or OTLP/JSON) decoded: by the compiled decoder when it can."""
    if json:
        return decode_traces_json(body)
    return decode_columns(body) or decode_traces_protobuf(body)
