"""The span lake: zstd Parquet files with the warehouse `spans` columns, Hive-partitioned.

`write_partitioned` splits a table by its partition values (`date`/`hour` from the span start
time, any `spans` column such as `service_name`, `rollout_id`, `span_type`, or an attribute:
`attributes.<key>` / `resource.<key>`, e.g. `resource.rl.mode`) and writes one file
per partition, each under a hidden temporary name first and renamed when complete: a reader
(DuckDB, Spark, Trino: they skip names starting with `.`) never sees half a file. File names
carry host, pid and a random part, so several collectors can write one lake.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.parse
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from spanpipe import columns

LAKE_SCHEMA = columns.arrow_schema(columns.SPANS)
DERIVED = ("date", "hour")


def open_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """A local path or any pyarrow filesystem URI (file://, s3://, gs://, hdfs://...)."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location).absolute())


ATTRIBUTE_PREFIXES = {"attributes.": "attributes", "resource.": "resource_attributes"}


def _attribute_key(key: str) -> tuple[str, str] | None:
    for prefix, column in ATTRIBUTE_PREFIXES.items():
        if key.startswith(prefix) and len(key) > len(prefix):
            return column, key[len(prefix):]
    return None


def check_partition_keys(keys: list[str]) -> None:
    columns = set(LAKE_SCHEMA.names)
    for key in keys:
        if key not in DERIVED and key not in columns and _attribute_key(key) is None:
            raise ValueError(f"unknown partition key '{key}' (use date, hour, a spans column, "
                             "attributes.<key> or resource.<key>)")


def _attribute_values(table: pa.Table, column: str, key: str) -> pa.Array:
    """One attribute of each row's JSON column, as text (DuckDB's vectorised JSON reader)."""
    import duckdb

    path = ('$."' + key.replace('"', '\\"') + '"').replace("'", "''")
    con = duckdb.connect()
    try:
        con.register("t", table.select([column]))
        return con.sql(f"SELECT json_extract_string({column}, '{path}') AS v FROM t").to_arrow_table() \
            .column("v").combine_chunks()
    finally:
        con.close()


def _partition_values(table: pa.Table, keys: list[str]) -> list[pa.Array]:
    out = []
    start = None
    for key in keys:
        attribute = _attribute_key(key)
        if key in DERIVED:
            if start is None:
                start = pc.cast(table.column("start_time_unix_nano"), pa.timestamp("ns", "UTC"))
            out.append(pc.strftime(start, "%Y-%m-%d" if key == "date" else "%H"))
        elif attribute is not None:
            out.append(_attribute_values(table, *attribute))
        else:
            out.append(pc.cast(table.column(key), pa.string()))
    return out


def _escape(value: str | None) -> str:
    # Hive's default partition name for NULL; '/' and '=' must not reach the path.
    return "__HIVE_DEFAULT_PARTITION__" if value is None else urllib.parse.quote(value, safe=" -_.:")


def file_name() -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"part-{stamp}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"


def write_partitioned(table: pa.Table, fs: pafs.FileSystem, root: str, keys: list[str],
                      max_rows_per_file: int = 1_000_000, compression_level: int = 3) -> list[str]:
    """Write `table` under `root`; returns the paths written (all or none visible on error)."""
    table = table.select(LAKE_SCHEMA.names).cast(LAKE_SCHEMA)
    groups: dict[tuple[str | None, ...], pa.Array] = {}
    if keys:
        values = _partition_values(table, keys)
        combined = pa.table({str(i): v for i, v in enumerate(values)}).group_by(
            [str(i) for i in range(len(keys))], use_threads=False).aggregate([])
        for row in combined.to_pylist():
            part = tuple(row[str(i)] for i in range(len(keys)))
            mask = None
            for v, value in zip(values, part):
                cond = pc.is_null(v) if value is None else pc.equal(v, value)
                mask = cond if mask is None else pc.and_(mask, cond)
            groups[part] = mask
    else:
        groups[()] = None
    written: list[str] = []
    try:
        for part, mask in groups.items():
            rows = table if mask is None else table.filter(mask)
            directory = "/".join([root.rstrip("/"), *(f"{k}={_escape(v)}" for k, v in zip(keys, part))])
            fs.create_dir(directory, recursive=True)
            for offset in range(0, max(rows.num_rows, 1), max_rows_per_file):
                chunk = rows.slice(offset, max_rows_per_file)
                final = f"{directory}/{file_name()}"
                tmp = f"{directory}/.{final.rsplit('/', 1)[1]}.tmp"
                try:
                    with fs.open_output_stream(tmp) as out:
                        pq.write_table(chunk, out, compression="zstd", compression_level=compression_level)
                    fs.move(tmp, final)
                except BaseException:
                    _delete(fs, tmp)
                    raise
                written.append(final)
    except BaseException:
        for path in written:  # all or nothing: a retry must not leave duplicates behind
            _delete(fs, path)
        raise
    return written


def _delete(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except (OSError, FileNotFoundError):
        pass


def lake_glob(location: str) -> str:
    """What DuckDB's read_parquet takes for a lake root."""
    return location.rstrip("/") + "/**/*.parquet"
