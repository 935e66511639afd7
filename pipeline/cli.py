"""`spanpipe` command line: run, validate, sql."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys

import orjson

from pipeline.errors import ConfigError

DEFAULT_CONFIG = "config/default.yaml"
DEFAULT_DB = "./data/spans.duckdb"


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level={"warn": "WARNING"}.get(level, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load(path: str):
    """The config at `path`, or None after printing why it is invalid."""
    from pipeline.config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    print(f"{args.config}: valid ({len(cfg.pipelines)} pipeline(s): {', '.join(cfg.pipelines)})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.service import Service

    cfg = _load(args.config)
    if cfg is None:
        return 1
    _setup_logging(cfg.log_level)
    try:
        Service(cfg).run()
    except Exception as exc:  # noqa: BLE001 - start-up failure: one clear line, exit 1
        logging.getLogger("spanpipe").debug("start-up failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _format_table(table, fmt: str) -> str:
    rows = table.to_pylist()
    cols = table.column_names
    if fmt == "json":
        return orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode()
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(cols)
        w.writerows([[r[c] for c in cols] for r in rows])
        return buf.getvalue().rstrip("\n")
    cells = [[("NULL" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    line = lambda vals: " | ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    out = [line(cols), "-+-".join("-" * w for w in widths), *(line(r) for r in cells)]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def cmd_sql(args: argparse.Namespace) -> int:
    from pipeline.warehouse import Warehouse, WarehouseError

    try:
        wh = Warehouse.connect(args.endpoint) if args.endpoint else Warehouse.find(args.db)
        with wh:
            table = wh.sql(args.query)
    except WarehouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(_format_table(table, args.format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spanpipe", description="OTLP span pipeline and warehouse for agent RL")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the collector")
    r.add_argument("--config", default=DEFAULT_CONFIG)
    r.set_defaults(fn=cmd_run)
    v = sub.add_parser("validate", help="check a config without starting anything")
    v.add_argument("--config", default=DEFAULT_CONFIG)
    v.set_defaults(fn=cmd_validate)
    s = sub.add_parser("sql", help="query the warehouse (through a running collector if there is one)")
    s.add_argument("query")
    s.add_argument("--db", default=DEFAULT_DB, help="warehouse file (default %(default)s)")
    s.add_argument("--endpoint", help="query API URL of a running collector, e.g. http://127.0.0.1:4319")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.set_defaults(fn=cmd_sql)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
