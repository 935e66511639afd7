"""`spanpipe` command line: run, validate, sql, triplets, trajectories, rollouts."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from spanpipe.registry import Registry

# The collector loads no pydantic plugins: one installed for an agent (Logfire registers one) would
# be imported into the collector by its first config model — 40 MiB of idle footprint, which the
# memory limiter counts. Set before any model class exists.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from spanpipe import __version__, importguard  # noqa: E402
from spanpipe.errors import ConfigError  # noqa: E402

DEFAULT_CONFIG = "config/default.yaml"
PACKAGED_CONFIG = Path(__file__).with_name("default.yaml")  # the same file, installed with the package


def config_path(given: str) -> str:
    """The config to use: the one given; without --config, ./config/default.yaml when run from a
    checkout, else the packaged default (so `spanpipe run` works from any directory)."""
    if given != DEFAULT_CONFIG or Path(given).exists():
        return given
    return str(PACKAGED_CONFIG)
DEFAULT_DB = "./data/spans.duckdb"


def default_registry() -> Registry:
    """Every component installed here (the built-ins and any package's), from entry points: the
    one place a registry is built."""
    from spanpipe.registry import Registry

    return Registry.from_entry_points()


def _load(path: str, registry: Registry | None = None):
    """The config at `path`, or None after printing why it is invalid."""
    from spanpipe.config import load_config
    from spanpipe.registry import RegistryError

    try:
        return load_config(path, registry or default_registry())
    except (ConfigError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    args.config = config_path(args.config)
    cfg = _load(args.config)
    if cfg is None:
        return 1
    print(f"{args.config}: valid ({len(cfg.pipelines)} pipeline(s): {', '.join(cfg.pipelines)})")
    return 0


def uses_memory_limiter(path: str) -> bool:
    """Whether a pipeline of the config at `path` has a memory_limiter, read from the YAML alone
    (before pyarrow loads); a config that cannot be read says no here and its error comes later."""
    import yaml

    from spanpipe.configyaml import component_type, safe_load_bounded

    try:
        pipelines = safe_load_bounded(Path(path).read_text())["service"]["pipelines"].values()
        return any(component_type(str(p)) == "memory_limiter"
                   for pl in pipelines for p in (pl or {}).get("processors") or [])
    except (OSError, yaml.YAMLError, ConfigError, KeyError, TypeError, AttributeError):
        return False


def return_freed_memory_if_limited(path: str) -> None:
    """Arrow's allocator (mimalloc) keeps a thread's freed pages until that thread allocates again.
    A collector with a memory_limiter has them handed back at once (2x overload, limit 300 MiB:
    peak 336-348 → 309-324 MiB); without one, the default keeps the gateway's per-call
    allocations ~10% faster. Read once, when pyarrow loads (call this first); decode workers
    inherit it."""
    if uses_memory_limiter(path):
        os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")


def cmd_run(args: argparse.Namespace) -> int:
    importguard.keep_out("pandas")
    path = config_path(args.config)
    return_freed_memory_if_limited(path)
    from spanpipe.service import Service

    registry = default_registry()
    cfg = _load(path, registry)
    if cfg is None:
        return 1
    from spanpipe.selftelemetry import configure_logging

    configure_logging(cfg.telemetry.logs)
    try:
        Service(cfg, registry).run()
    except Exception as exc:  # noqa: BLE001 - start-up failure: one clear line, exit 1
        logging.getLogger("spanpipe").debug("start-up failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cell(name: str, value: Any, max_width: int) -> str:
    """One table cell: NULL, times (`*_unix_nano`) as UTC ISO 8601 when cells are cut for a
    terminal, long text cut to `max_width` (0: whole)."""
    if value is None:
        return "NULL"
    if max_width and name.endswith("_unix_nano") and isinstance(value, int):
        return datetime.fromtimestamp(value / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    text = str(value).replace("\n", " ")
    return text if not max_width or len(text) <= max_width else text[:max_width - 1] + "…"


def _format_table(table, fmt: str, max_width: int = 0) -> str:
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
    cells = [[_cell(c, r[c], max_width) for c in cols] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    line = lambda vals: " | ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    out = [line(cols), "-+-".join("-" * w for w in widths), *(line(r) for r in cells)]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _warehouse(args: argparse.Namespace):
    from spanpipe.warehouse import Warehouse

    if args.lake:
        return Warehouse.open_lake(args.lake)
    token = args.token or os.environ.get("SPANPIPE_TOKEN")
    return Warehouse.connect(args.endpoint, token) if args.endpoint else Warehouse.find(args.db, token)


def _print_query(args: argparse.Namespace, query) -> int:
    """Run `query(warehouse)` and print the table it returns in `--format`."""
    from spanpipe.warehouse import WarehouseError

    try:
        with _warehouse(args) as wh:
            table = query(wh)
    except WarehouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    width = args.max_width if args.max_width is not None else (60 if sys.stdout.isatty() else 0)
    print(_format_table(table, args.format, width))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    return _print_query(args, lambda wh: wh.sql(args.query))


def cmd_rollouts(args: argparse.Namespace) -> int:
    return _print_query(args, lambda wh: wh.rollouts(args.rollout or None, status=args.status))


def cmd_triplets(args: argparse.Namespace) -> int:
    """Triplets as JSON lines (stdout or --out) or a Parquet file; reasons for empty rollouts and
    the next cursor go to stderr so stdout stays data."""
    import pyarrow.parquet as pq

    from spanpipe.warehouse import WarehouseError

    if args.format == "parquet" and not args.out:
        print("error: --format parquet needs --out FILE", file=sys.stderr)
        return 2
    from spanpipe.adapters.triplet_types import NO_SPANS

    options: dict[str, Any] = {"reward_match": args.reward_match, "agent_match": args.agent_match,
                               "skip_empty_token_spans": args.skip_empty_token_spans}
    if args.llm_call_match is not None:  # given: only spans of that name (not every span typed llm)
        options.update(llm_call_match=args.llm_call_match, llm_conventions=False)
    logging.getLogger("spanpipe.adapters.triplets").setLevel(logging.ERROR)  # reasons: printed once, below
    if args.engine == "ray" and not args.lake:
        print("error: --engine ray reads a lake: give --lake PATH", file=sys.stderr)
        return 2
    try:
        if args.engine == "ray":
            result = _ray_triplets(args, options)
            completed = {}
        else:
            with _warehouse(args) as wh:
                result = wh.triplets(args.rollout or None, since=args.since, mode=args.mode, **options)
                completed = wh.completed_rollouts(args.rollout) if args.rollout else {}
    except (WarehouseError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for rid, why in result.reasons.items():
        print(f"no triplet for {rid}: {why}", file=sys.stderr)
    unknown = [r for r, why in result.reasons.items() if why == NO_SPANS]
    for rid in dict.fromkeys(args.rollout or ()):
        if rid not in completed and rid not in unknown:
            print(f"{rid} is still running (not completed): its triplets may be partial", file=sys.stderr)
    if args.format == "parquet":
        pq.write_table(result.to_arrow(), args.out)
    elif args.out:
        result.to_jsonl(args.out)
    else:
        for t in result:
            sys.stdout.write(orjson.dumps(t.to_dict()).decode() + "\n")
    print(f"{len(result)} triplet(s)" + (f"; next cursor: {result.cursor}" if result.cursor is not None else ""),
          file=sys.stderr)
    _say_missing_token_ids(result.to_arrow())
    return 3 if unknown else 0


def _ray_triplets(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    """Triplets computed by Ray Data over the lake (`spanpipe.lake.ray`), in the order the DuckDB
    engine gives them. Joins the cluster in $RAY_ADDRESS, else starts a local one."""
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray: pip install 'spanpipe[ray]'") from None
    import pyarrow as pa
    import pyarrow.compute as pc

    import spanpipe.lake.ray as lake_ray
    from spanpipe.adapters.triplet_types import NO_SPANS, Triplets

    ray.init(logging_level="ERROR", log_to_driver=False, configure_logging=False, include_dashboard=False,
             **({} if os.environ.get("RAY_ADDRESS") else {"_node_ip_address": "127.0.0.1"}))
    try:
        result = lake_ray.triplets(args.lake, args.rollout or None, since=args.since, mode=args.mode, **options)
        tables = ray.get(result.dataset.to_arrow_refs())
    finally:
        ray.shutdown()
    table = pa.concat_tables(tables) if tables else pa.table({})
    reasons: dict[str, str] = {}
    if table.num_rows:
        order = pc.index_in(table.column("rollout_id"), value_set=pa.array(result.rollout_ids, pa.string()))
        table = (table.append_column("_k", order).append_column("_o", pa.array(range(table.num_rows), pa.int64()))
                 .sort_by([("_k", "ascending"), ("_o", "ascending")]).drop_columns(["_k", "_o"]))
        produced = set(table.column("rollout_id").to_pylist())
    else:
        produced = set()
    for rid in result.rollout_ids:
        if rid not in produced:
            reasons[rid] = "no triplet (the DuckDB engine says why)"
    for rid in dict.fromkeys(args.rollout or ()):
        if rid not in result.rollout_ids:
            reasons[rid] = NO_SPANS
    out = Triplets(table=table, reasons=reasons) if table.num_rows else Triplets(reasons=reasons)
    out.cursor = result.cursor
    return out


def _say_missing_token_ids(table: Any) -> None:
    """How many triplets have no token ids, and why (their metadata's token_ids_missing_reason)."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return
    empty = pc.or_(pc.equal(pc.list_value_length(table.column("prompt_token_ids")), 0),
                   pc.equal(pc.list_value_length(table.column("response_token_ids")), 0))
    lacking = table.filter(pc.fill_null(empty, True))
    if lacking.num_rows == 0:
        return
    why: dict[str, int] = {}
    for meta in lacking.column("metadata").to_pylist():
        reason = orjson.loads(meta).get("token_ids_missing_reason") or "unknown"
        why[reason] = why.get(reason, 0) + 1
    print(f"{lacking.num_rows} of {table.num_rows} triplet(s) have no token ids:", file=sys.stderr)
    for reason, n in sorted(why.items(), key=lambda kv: -kv[1]):
        print(f"  {n} × {reason}", file=sys.stderr)


def cmd_ui(args: argparse.Namespace) -> int:
    import signal
    import threading

    from spanpipe.ui.standalone import CannotServe, file_connector, lake_connector, serve

    if not args.lake:
        ep = Path(f"{args.db}.endpoint")
        if ep.exists():
            from spanpipe.warehouse import Warehouse

            url = ep.read_text().strip()
            if Warehouse.connect(url).ping():
                print(f"a collector serves {args.db}: its viewer is at {url}/ui/")
                return 0
    try:
        connect = lake_connector(args.lake) if args.lake else file_connector(args.db)
    except CannotServe as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve(connect, args.host, args.port, stop, lambda url: print(f"web viewer on {url} (Ctrl+C stops it)", flush=True))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_trajectories(args: argparse.Namespace) -> int:
    """Token-level samples as JSON lines (stdout or --out) or a Parquet file; counts, breaks by
    reason and rollouts without samples go to stderr."""
    import pyarrow.parquet as pq

    from spanpipe.warehouse import WarehouseError

    if args.format == "parquet" and not args.out:
        print("error: --format parquet needs --out FILE", file=sys.stderr)
        return 2
    try:
        with _warehouse(args) as wh:
            result = wh.trajectories(args.rollout or None, since=args.since, mode=args.mode, merge=args.merge,
                                     reward=args.reward)
    except (WarehouseError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.format == "parquet":
        pq.write_table(result.table, args.out)
    else:
        lines = (orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n" for row in result.table.to_pylist())
        if args.out:
            with open(args.out, "w") as fh:
                fh.writelines(lines)
        else:
            sys.stdout.writelines(lines)
    for rid, why in result.reasons.items():
        print(f"no sample for {rid}: {why}", file=sys.stderr)
    reasons = result.breaks.column("reason").to_pylist()
    by_reason = ", ".join(f"{r} {reasons.count(r)}" for r in sorted(set(reasons))) or "none"
    print(f"{len(result)} sample(s); breaks: {by_reason}; {len(result.reasons)} rollout(s) without samples"
          + (f"; next cursor: {result.cursor}" if result.cursor is not None else ""), file=sys.stderr)
    return 0


def _selection_args(p: argparse.ArgumentParser) -> None:
    """Which rollouts (by id, or completed since a cursor), and where the rows go."""
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--rollout", action="append", help="this rollout (repeatable)")
    pick.add_argument("--since", type=int, help="rollouts completed after this cursor (0 = all completed)")
    p.add_argument("--mode", choices=["train", "val", "test"], help="only rollouts of this mode")
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl",
                   help="JSON lines on stdout or --out (default), or a Parquet file (needs --out)")
    p.add_argument("--out", help="write to this file (needed for parquet)")


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=DEFAULT_DB, help="warehouse file (default %(default)s)")
    p.add_argument("--endpoint", help="query API URL of a running collector, e.g. http://127.0.0.1:4319")
    p.add_argument("--token", help="bearer token of a query API with auth (default: $SPANPIPE_TOKEN)")
    p.add_argument("--lake", help="query a Parquet lake (the parquet exporter's path) instead of a warehouse")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spanpipe", description="OTLP span pipeline and warehouse for agent RL")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the collector")
    r.add_argument("--config", default=DEFAULT_CONFIG,
                   help="YAML config (default: ./config/default.yaml if present, else the packaged default)")
    r.set_defaults(fn=cmd_run)
    v = sub.add_parser("validate", help="check a config without starting anything")
    v.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default as for run)")
    v.set_defaults(fn=cmd_validate)
    s = sub.add_parser("sql", help="query the warehouse (through a running collector if there is one)",
                       description="Read-only SQL (DuckDB dialect) over the warehouse. Tables: spans, logs, "
                       "reward_dimensions, rollout_completions, triplet_payloads. Views: llm_calls, rewards, "
                       "rollouts, attempts, triplets. Example: spanpipe sql \"SELECT rollout_id, status, "
                       "final_reward FROM rollouts\"")
    s.add_argument("query", help="one SELECT (or WITH … SELECT) statement")
    _source_args(s)
    s.add_argument("--format", choices=["table", "csv", "json"], default="table", help="how rows are printed")
    s.add_argument("--max-width", type=int, help="table cells cut to this many characters, times shown as "
                   "UTC (default: 60 on a terminal, whole otherwise; 0: whole)")
    s.set_defaults(fn=cmd_sql)
    ro = sub.add_parser("rollouts", help="list rollouts: status, spans, LLM calls, tokens, final reward")
    ro.add_argument("--rollout", action="append", help="only this rollout (repeatable)")
    ro.add_argument("--status", help="only rollouts with this status (running, succeeded, failed)")
    _source_args(ro)
    ro.add_argument("--format", choices=["table", "csv", "json"], default="table", help="how rows are printed")
    ro.add_argument("--max-width", type=int, help="as for sql")
    ro.set_defaults(fn=cmd_rollouts)
    t = sub.add_parser("triplets", help="(prompt, response, reward) triplets of rollouts")
    _selection_args(t)
    t.add_argument("--reward-match", choices=["first_occurrence", "first_sibling"], default="first_occurrence",
                   help="which LLM call a reward span scores: the calls before it (Agent Lightning's default), "
                   "or only its siblings")
    t.add_argument("--llm-call-match", help="only spans whose name matches this regex are LLM calls (default: "
                   "any span an instrumentation convention marks as one, or named openai.chat.completion)")
    t.add_argument("--skip-empty-token-spans", action="store_true", help="leave out LLM calls without token ids")
    t.add_argument("--agent-match", help="regex on agent names")
    t.add_argument("--engine", choices=["duckdb", "ray"], default="duckdb",
                   help="duckdb: on this machine (default); ray: Ray Data over the --lake, on the Ray cluster in "
                   "$RAY_ADDRESS or a local one (needs spanpipe[ray])")
    _source_args(t)
    t.set_defaults(fn=cmd_triplets)
    u = sub.add_parser("ui", help="the web viewer over a warehouse file or a Parquet lake (no collector needed)",
                       description="Serves the web viewer (rollouts, calls, rewards, SQL console) read-only. "
                       "A running collector serves it itself at its query API's address under /ui/.")
    u.add_argument("--db", default=DEFAULT_DB, help="warehouse file (default %(default)s)")
    u.add_argument("--lake", help="a local Parquet lake (the parquet exporter's path) instead of a file")
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    u.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    u.set_defaults(fn=cmd_ui)
    tr = sub.add_parser("trajectories", help="token-level samples (prompt ids, response ids, mask, logprobs)")
    _selection_args(tr)
    tr.add_argument("--merge", choices=["prefix", "none"], default="prefix",
                    help="prefix: consecutive calls whose prompt continues the last one are one sample; none: one per call")
    tr.add_argument("--reward", choices=["final", "per_turn"], default="final",
                    help="final: the rollout's final reward on every sample; per_turn: the merged calls' own rewards, summed")
    _source_args(tr)
    tr.set_defaults(fn=cmd_trajectories)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
