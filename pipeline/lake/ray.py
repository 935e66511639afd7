"""Triplets, messages and trajectories from a Parquet lake with Ray Data (`pip install spanpipe[ray]`).

The driver chooses the rollouts exactly as the single-machine path does (`TripletAdapter.select`
over the lake: completed rollouts, those asked, a mode, after a cursor), which reads only the
lake's rollout spans. Ray Data then reads the span partitions, keeps those rollouts' rows, puts
each rollout in one of `buckets` groups, and on each group runs the very code the single-machine
path runs — the triplet adapter, the messages adapter, the trajectory builder — over an in-memory
DuckDB holding that group's spans with the lake's views on top. Same decisions, so the same rows;
only their order across groups is Ray's (sort by rollout_id for a fixed order).

    import ray, spanpipe.lake.ray as lake_ray
    ray.init()
    result = lake_ray.triplets("s3://bucket/lake", since=cursor)
    result.dataset            # a ray.data.Dataset of triplet rows (Triplets.to_arrow's columns)
    result.cursor             # pass as since= next time
    result.dataset.write_parquet("out/")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray
import ray.data
from ray.data.context import DataContext, ShuffleStrategy

from spanpipe.warehouse.schema import SPANS_COLUMNS

What = Literal["triplets", "messages", "trajectories"]


@dataclass
class LakeResult:
    dataset: ray.data.Dataset
    cursor: int | None
    rollout_ids: list[str]


def triplets(location: str, rollout_ids: Iterable[str] | None = None, since: int | None = None,
             mode: str | None = None, buckets: int | None = None, **adapter_options: Any) -> LakeResult:
    """Triplet rows (the columns of `Triplets.to_arrow()`)."""
    return _run("triplets", location, rollout_ids, since, mode, buckets, adapter_options)


def messages(location: str, rollout_ids: Iterable[str] | None = None, since: int | None = None,
             mode: str | None = None, buckets: int | None = None, **adapter_options: Any) -> LakeResult:
    """Chat fine-tuning records: `messages` and `tools` as JSON text, `rollout_id`, `span_id`, `reward`."""
    return _run("messages", location, rollout_ids, since, mode, buckets, adapter_options)


def trajectories(location: str, rollout_ids: Iterable[str] | None = None, since: int | None = None,
                 mode: str | None = None, buckets: int | None = None, **options: Any) -> LakeResult:
    """Token-level samples (`Trajectories.table`'s columns); `merge`, `reward`, … as for
    `Warehouse.trajectories`."""
    return _run("trajectories", location, rollout_ids, since, mode, buckets, options)


def _run(what: What, location: str, rollout_ids: Iterable[str] | None, since: int | None, mode: str | None,
         buckets: int | None, options: dict[str, Any]) -> LakeResult:
    from spanpipe.adapters.triplets import TripletAdapter
    from spanpipe.lake import open_filesystem

    adapter_options = {k: v for k, v in options.items() if k not in _TRAJECTORY_OPTIONS}
    fs, root = open_filesystem(location)
    dataset = pads.dataset(root, filesystem=fs, format="parquet", partitioning="hive")
    with _completion_spans(dataset) as lake:
        wanted, cursor = TripletAdapter(lake, **adapter_options).select(rollout_ids, since, mode)
    if not wanted:
        return LakeResult(ray.data.from_arrow(pa.table({"rollout_id": pa.array([], pa.string())})), cursor, [])
    cpus = int(ray.available_resources().get("CPU", 1))
    buckets = buckets or max(1, min(len(wanted), cpus * 4))
    files = [f for f in dataset.files if f.endswith(".parquet")]
    read = _ReadAndBucket(fs, wanted, buckets)

    # The files are listed here (the listing above) and read by plain tasks: Ray Data 2.60's
    # read_parquet provisions a pool of up to 32 footer-reading actors per call, each a new worker
    # process, which on a small cluster costs more than the read.
    # A sort-based shuffle: Ray Data's default hash shuffle starts aggregator actors, seconds of
    # overhead per pull on a small cluster. The datasets keep the setting; the caller's context is restored.
    context = DataContext.get_current()
    caller_strategy = context.shuffle_strategy
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        paths = ray.data.from_items([{"path": f} for f in files], override_num_blocks=max(1, min(len(files), cpus * 4)))
        spans = paths.map_batches(read, batch_format="pyarrow", batch_size=None)
        adapt = _GroupAdapter(what, wanted, options)
        out = spans.groupby("_bucket", num_partitions=buckets).map_groups(lambda group: adapt(group),
                                                                          batch_format="pyarrow")
    finally:
        context.shuffle_strategy = caller_strategy
    return LakeResult(out, cursor, wanted)


class _ReadAndBucket:
    """A block of file paths → those files' rows of the wanted rollouts, each with its group
    (`_bucket`), on a Ray worker."""

    def __init__(self, fs: Any, wanted: list[str], buckets: int) -> None:
        self.fs, self.order, self.buckets = fs, pa.array(wanted, pa.string()), buckets
        self.columns = [name for name, _ in SPANS_COLUMNS]

    def __call__(self, paths: pa.Table) -> pa.Table:
        import pyarrow.parquet as pq

        kept = []
        for path in paths.column("path").to_pylist():
            table = pq.read_table(path, filesystem=self.fs, columns=self.columns,
                                  partitioning=None, filters=pc.field("rollout_id").isin(self.order))
            index = pc.index_in(table.column("rollout_id"), value_set=self.order).to_numpy(zero_copy_only=False)
            kept.append(table.append_column("_bucket", pa.array(np.asarray(index, np.int64) % self.buckets)))
        return pa.concat_tables(kept, promote_options="permissive")


_TRAJECTORY_OPTIONS = ("merge", "reward", "max_staleness", "current_version")


def _completion_spans(dataset: pads.Dataset) -> Any:
    """A warehouse over the lake's rollout and reward spans only (what choosing rollouts reads:
    completions, modes, late rewards), read with pyarrow from any filesystem — a local path, S3…"""
    import duckdb

    from spanpipe.warehouse.schema import ROLLOUT_SPAN
    from spanpipe.warehouse.views import create_views_over_spans
    from spanpipe.warehouse.warehouse import Warehouse

    names = [name for name, _ in SPANS_COLUMNS]
    wanted = (pads.field("name") == ROLLOUT_SPAN) | (pads.field("span_type") == "reward")
    table = dataset.to_table(columns=[n for n in names if n in dataset.schema.names], filter=wanted)
    con = duckdb.connect()
    con.register("__lake_spans", table)
    present = set(table.column_names)
    con.execute("CREATE VIEW spans AS SELECT " + ", ".join(
        n if n in present else f"NULL::{sql.split()[0]} AS {n}" for n, sql in SPANS_COLUMNS) + " FROM __lake_spans")
    create_views_over_spans(con)
    return Warehouse(con=con)


class _GroupAdapter:
    """One group's spans → the adapter's rows, on a Ray worker."""

    def __init__(self, what: What, wanted: list[str], options: dict[str, Any]) -> None:
        self.what, self.wanted, self.options = what, wanted, options

    def __call__(self, group: pa.Table) -> pa.Table:
        import duckdb

        from spanpipe.warehouse.views import create_views_over_spans
        from spanpipe.warehouse.warehouse import Warehouse

        present = set(group.column("rollout_id").to_pylist())
        ids = [r for r in self.wanted if r in present]
        con = duckdb.connect()
        con.register("__group_spans", group.drop_columns(["_bucket"]))
        con.execute("CREATE VIEW spans AS SELECT * FROM __group_spans")
        create_views_over_spans(con)
        wh = Warehouse(con=con)
        try:
            if self.what == "triplets":
                return wh.triplets(ids, **self.options).to_arrow()
            if self.what == "messages":
                return _messages_table(wh.messages(ids, **self.options))
            return wh.trajectories(ids, **self.options).table
        finally:
            con.close()


def _messages_table(records: list[dict[str, Any]]) -> pa.Table:
    import orjson

    return pa.table({
        "rollout_id": pa.array([r["rollout_id"] for r in records], pa.string()),
        "span_id": pa.array([r["span_id"] for r in records], pa.string()),
        "reward": pa.array([r["reward"] for r in records], pa.float64()),
        "messages": pa.array([orjson.dumps(r["messages"]).decode() for r in records], pa.string()),
        "tools": pa.array([orjson.dumps(r.get("tools")).decode() for r in records], pa.string()),
    })
