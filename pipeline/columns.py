"""The one definition of the warehouse's tables: the `spans` and `logs` columns, each with its
Arrow type (what batches carry, what the Parquet lake writes) and its DuckDB type (the DDL). The
DDL, the lake's Arrow schema, the log-record table and the promoted columns all derive from here
(ARCHITECTURE.md#the-warehouse)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Column:
    name: str
    arrow: pa.DataType
    sql: str
    promoted: bool = False  # filled by a processor that declares it (`Factory.adds_columns`), else NULL


_S, _I64, _F64 = pa.string(), pa.int64(), pa.float64()

SPANS: tuple[Column, ...] = (
    Column("trace_id", _S, "VARCHAR NOT NULL"),
    Column("span_id", _S, "VARCHAR NOT NULL"),
    Column("parent_span_id", _S, "VARCHAR"),
    Column("trace_state", _S, "VARCHAR"),
    Column("name", _S, "VARCHAR"),
    Column("kind", _S, "VARCHAR"),
    Column("start_time_unix_nano", _I64, "BIGINT"),
    Column("end_time_unix_nano", _I64, "BIGINT"),
    Column("duration_ns", _I64, "BIGINT"),
    Column("status_code", _S, "VARCHAR"),
    Column("status_message", _S, "VARCHAR"),
    Column("service_name", _S, "VARCHAR"),
    Column("scope_name", _S, "VARCHAR"),
    Column("scope_version", _S, "VARCHAR"),
    Column("attributes", _S, "JSON"),
    Column("resource_attributes", _S, "JSON"),
    Column("events", _S, "JSON"),
    Column("links", _S, "JSON"),
    Column("rollout_id", _S, "VARCHAR", promoted=True),
    Column("attempt_id", _S, "VARCHAR", promoted=True),
    Column("sequence_id", _I64, "BIGINT", promoted=True),
    Column("span_type", _S, "VARCHAR", promoted=True),
    Column("reward", _F64, "DOUBLE", promoted=True),
    Column("response_id", _S, "VARCHAR", promoted=True),
)

# Columns the warehouse computes from a span as it stores it (`warehouse.schema.DERIVED_SQL`);
# batches and the lake's files do not carry them.
DERIVED_SPANS: tuple[Column, ...] = (
    Column("agent_name", _S, "VARCHAR"),  # the agent the span stands for (`semconv.agents`), else NULL
)

# Batch columns a processor may add that go to a table of their own, not to `spans`.
BATCH_ONLY: dict[str, str] = {"reward_dimensions": "every reward dimension, for the reward_dimensions table"}

LOGS: tuple[Column, ...] = (
    Column("trace_id", _S, "VARCHAR"),
    Column("span_id", _S, "VARCHAR"),
    Column("time_unix_nano", _I64, "BIGINT"),
    Column("observed_time_unix_nano", _I64, "BIGINT"),
    Column("event_name", _S, "VARCHAR"),
    Column("severity_number", pa.int32(), "INTEGER"),
    Column("severity_text", _S, "VARCHAR"),
    Column("body", _S, "JSON"),
    Column("attributes", _S, "JSON"),
    Column("resource_attributes", _S, "JSON"),
    Column("service_name", _S, "VARCHAR"),
    Column("scope_name", _S, "VARCHAR"),
)


def create_table_sql(table: str, columns: tuple[Column, ...]) -> str:
    return f"CREATE TABLE IF NOT EXISTS {table} (\n  " + ",\n  ".join(f"{c.name} {c.sql}" for c in columns) + "\n)"


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    return pa.schema([(c.name, c.arrow) for c in columns])


def promoted(columns: tuple[Column, ...] = SPANS) -> dict[str, pa.DataType]:
    """The columns processors fill, with their Arrow types."""
    return {c.name: c.arrow for c in columns if c.promoted}
