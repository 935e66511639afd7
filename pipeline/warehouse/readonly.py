"""Deciding whether a SQL text may run through the read-only query API.

Only a single SELECT is allowed, and it may read only the warehouse's own tables and views: no
table functions (read_csv, read_parquet, ...), no file paths or Python objects as tables, no
functions that reach outside (getenv, ...) or have effects (nextval). DuckDB's own parser gives us
the statement type and the query tree (json_serialize_sql), which we walk; we do not parse SQL
ourselves. This is the second wall: the database the API reads has no filesystem access at all.
"""

from __future__ import annotations

from typing import Any, Iterator

import duckdb
import orjson

# Table functions that only compute (no I/O).
ALLOWED_TABLE_FUNCTIONS = {"range", "generate_series", "unnest", "json_each", "json_tree"}
# Functions with effects outside the query (a sequence moves, the session changes) or that reach out.
DENIED_FUNCTIONS = {"getenv", "current_setting", "read_text", "read_blob", "query", "query_table",
                    "nextval", "setseed"}


class QueryRefused(Exception):
    pass


def _walk_scoped(node: Any, ctes: frozenset[str] = frozenset()) -> Iterator[tuple[dict[str, Any], frozenset[str]]]:
    """Every node with the CTE names in scope there: a query node's CTEs are visible in that node
    (its CTE bodies included), not beside it."""
    if isinstance(node, dict):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            names = {str(e["key"]).lower() for e in cte_map.get("map", []) if isinstance(e, dict) and "key" in e}
            ctes = ctes | names
        yield node, ctes
        for v in node.values():
            yield from _walk_scoped(v, ctes)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_scoped(v, ctes)


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str, readable: set[str]) -> None:
    """Raise QueryRefused unless `sql` is one SELECT over `readable` tables/views only."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"cannot parse query: {exc}") from None
    if len(statements) != 1:
        raise QueryRefused("send exactly one statement")
    stype = statements[0].type
    if stype != duckdb.StatementType.SELECT:
        raise QueryRefused(f"only SELECT queries are allowed through the query API "
                           f"(got {stype.name}); the warehouse is read-only here")
    tree = orjson.loads(con.execute("SELECT json_serialize_sql($q)", {"q": sql}).fetchall()[0][0])
    if tree.get("error"):
        raise QueryRefused(f"query refused: {tree.get('error_message')}")
    for node, ctes in _walk_scoped(tree):
        ntype = node.get("type")
        if ntype == "TABLE_FUNCTION":
            fname = (node.get("function") or {}).get("function_name", "")
            if fname.lower() not in ALLOWED_TABLE_FUNCTIONS:
                raise QueryRefused(f"table function '{fname}' is not allowed through the query API")
        elif ntype == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            catalog = node.get("catalog_name") or ""
            schema = node.get("schema_name") or ""
            if catalog or schema not in ("", "main"):
                raise QueryRefused(f"'{catalog or schema}.{name}': only the warehouse's own tables can be read")
            if name.lower() not in readable and name.lower() not in ctes:
                raise QueryRefused(f"unknown table '{name}' (readable: {', '.join(sorted(readable))})")
        elif node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() in DENIED_FUNCTIONS:
            raise QueryRefused(f"function '{node['function_name']}' is not allowed through the query API")
