"""Triplet payloads computed once, when an LLM span is written, instead of at every read.

A triplet's prompt, response and metadata (Agent Lightning's shapes, `adapters.agl_payload`) depend
only on the LLM span's own attributes and events, so the duckdb exporter computes them for the LLM
spans it writes (`PayloadIndexer`, in idle time) and keeps them in `triplet_payloads`, as JSON text and token-id
arrays. The triplet reader then only decides *which* calls become triplets (the tree decisions)
and joins. Rows carry `version`: a reader ignores rows of another version and computes those
payloads itself, as it does for spans written before this table existed, spans its own
`llm_call_match` finds but the writer did not, and lakes (which have no payload table).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable

import orjson
import pyarrow as pa
import pyarrow.compute as pc

PAYLOAD_VERSION = 2  # 2: metadata may hold token_ids_missing_reason

# The LLM spans the writer prepares payloads for: the collector's classification, and the
# TripletAdapter's default name pattern.
DEFAULT_LLM_CALL_MATCH = r"openai\.chat\.completion"

PAYLOAD_FIELDS: dict[str, pa.DataType] = {
    "prompt_token_ids": pa.list_(pa.int32()),  # as triplets carry them (payload() keeps only ids that fit)
    "response_token_ids": pa.list_(pa.int32()),
    "prompt": pa.string(),         # JSON of {token_ids, raw_content, image_urls}
    "response": pa.string(),       # JSON of {token_ids, raw_content[, logprobs]}
    "metadata_head": pa.string(),  # JSON of {request, response, response_id, — the reader appends agent_name
    "response_logprobs": pa.list_(pa.float32()),  # each response token's sampling logprob; [] when none
}

DDL = ("CREATE TABLE IF NOT EXISTS triplet_payloads (rollout_id VARCHAR, trace_id VARCHAR NOT NULL, span_id VARCHAR NOT NULL, "
       "start_time_unix_nano BIGINT, version INTEGER, prompt_token_ids INTEGER[], response_token_ids INTEGER[], "
       "prompt VARCHAR, response VARCHAR, metadata_head VARCHAR, response_logprobs FLOAT[])")
# Files from before `response_logprobs`: their rows have it NULL, and readers parse the span for those.
# Files from before INTEGER[] token ids keep BIGINT[]: readers cast (TRY_CAST) what they read.
ADD_LOGPROBS = "ALTER TABLE triplet_payloads ADD COLUMN IF NOT EXISTS response_logprobs FLOAT[]"


def sampling_logprobs(value: Any) -> list[float | None]:
    """The logprobs of `logprobs.content` (the llm_gateway's list of {token, logprob, …}, or its
    JSON text); None where an entry has none, [] when there is no such list. The SQL fallback of
    the trajectory reader reads the same key the same way."""
    if isinstance(value, (str, bytes)):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return []
    if not isinstance(value, list):
        return []
    out: list[float | None] = []
    for e in value:
        lp = e.get("logprob") if isinstance(e, dict) else None
        out.append(float(lp) if isinstance(lp, (int, float)) and not isinstance(lp, bool) else None)
    return out

# Same deduplication as the spans insert: a retried batch finds its rows in its start-time range.
INSERT = """
INSERT INTO triplet_payloads
SELECT * FROM __payloads n
WHERE NOT EXISTS (
    SELECT 1 FROM triplet_payloads t
    WHERE t.start_time_unix_nano BETWEEN $lo AND $hi
      AND t.trace_id = n.trace_id AND t.span_id = n.span_id
)
"""


def payload_fields(attributes_json: str | bytes | None, events_json: str | bytes | None) -> dict[str, Any]:
    """One LLM span's payload columns (PAYLOAD_FIELDS) from its stored attributes and events."""
    from spanpipe.adapters.agl_payload import payload

    attrs = orjson.loads(attributes_json) if attributes_json else {}
    events = orjson.loads(events_json) if events_json else None
    prompt, response, metadata = payload(attrs, events, "")
    head = orjson.dumps({k: v for k, v in metadata.items() if k != "agent_name"})[:-1] + b","
    return {"prompt_token_ids": [int(i) for i in prompt["token_ids"]],
            "response_token_ids": [int(i) for i in response["token_ids"]],
            "prompt": orjson.dumps(prompt).decode(), "response": orjson.dumps(response).decode(),
            "metadata_head": head.decode(), "response_logprobs": sampling_logprobs(attrs.get("logprobs.content"))}


def payload_columns(rows: Iterable[tuple[Any, Any]]) -> dict[str, pa.Array]:
    """PAYLOAD_FIELDS as Arrow arrays for (attributes JSON, events JSON) pairs."""
    cols: dict[str, list[Any]] = {k: [] for k in PAYLOAD_FIELDS}
    for attrs, events in rows:
        for k, v in payload_fields(attrs, events).items():
            cols[k].append(v)
    return {k: pa.array(v, PAYLOAD_FIELDS[k]) for k, v in cols.items()}


def llm_rows(spans: pa.Table, llm_call_match: str = DEFAULT_LLM_CALL_MATCH) -> pa.Array:
    """A boolean mask of the LLM spans in a `spans`-shaped Arrow table."""
    by_type = pc.equal(spans.column("span_type"), "llm")
    by_name = pc.match_substring_regex(spans.column("name"), llm_call_match)  # re.search semantics
    return pc.fill_null(pc.or_(by_type, by_name), False)


def payload_table(spans: pa.Table) -> pa.Table | None:
    """The `triplet_payloads` rows for the LLM spans of a `spans`-shaped table."""
    return _payloads_of(spans.filter(llm_rows(spans)))


def _payloads_of(llm: pa.Table) -> pa.Table | None:
    if llm.num_rows == 0:
        return None
    cols = payload_columns(zip(llm.column("attributes").to_pylist(), llm.column("events").to_pylist()))
    return pa.table({"rollout_id": llm.column("rollout_id"), "trace_id": llm.column("trace_id"),
                     "span_id": llm.column("span_id"), "start_time_unix_nano": llm.column("start_time_unix_nano"),
                     "version": pa.array([PAYLOAD_VERSION] * llm.num_rows, pa.int32()), **cols})


def insert_payloads(con: Any, spans: pa.Table) -> int:
    """Compute and insert the payloads of `spans`' LLM spans on `con`."""
    table = payload_table(spans)
    if table is None:
        return 0
    return insert_payload_table(con, table)


def insert_payload_table(con: Any, table: pa.Table) -> int:
    bounds = pc.min_max(table.column("start_time_unix_nano")).as_py()
    con.register("__payloads", table)
    try:
        con.execute(INSERT, {"lo": bounds["min"], "hi": bounds["max"]})
    finally:
        con.unregister("__payloads")
    return table.num_rows


class PayloadIndexer:
    """Computes the payloads of written LLM spans on its own thread, in the writer's idle time.

    Payloads are Python work (~0.1 ms per LLM span); done inline they would cap ingest. The writer
    hands over the LLM rows it inserted; this thread computes and stores their payloads once the
    exporter has had nothing queued for `quiet` seconds, `chunk` rows at a time, looking again
    between chunks: it holds the GIL for a few milliseconds at most, never while spans arrive.
    Work waiting is bounded (`max_rows`): when ingest outruns it, what arrives while the backlog
    is full is not taken (not even filtered: under sustained load that filtering cost the writer
    ~1 µs per span for nothing) — those spans simply have no stored payload and the reader
    computes theirs.
    """

    def __init__(self, name: str, busy: Callable[[], bool], write: Callable[[pa.Table], None],
                 max_rows: int = 16_384, quiet: float = 0.5, chunk: int = 64) -> None:
        self._busy, self._write, self._max_rows = busy, write, max_rows
        self._quiet, self._chunk = quiet, chunk
        self._busy_at = 0.0
        self._pending: deque[pa.Table] = deque()
        self._rows = 0
        self._cond = threading.Condition()
        self._stop = False
        self.skipped = 0
        self._thread = threading.Thread(target=self._run, name=f"{name}-payloads", daemon=True)
        self._thread.start()

    def submit(self, spans: pa.Table) -> None:
        mask = llm_rows(spans)
        with self._cond:
            if self._rows >= self._max_rows:
                self.skipped += pc.sum(mask).as_py() or 0
                return
        llm = spans.select(["rollout_id", "trace_id", "span_id", "start_time_unix_nano", "attributes",
                            "events"]).filter(mask)
        if llm.num_rows == 0:
            return
        with self._cond:
            self._pending.append(llm)
            self._rows += llm.num_rows
            while self._rows > self._max_rows and len(self._pending) > 1:
                dropped = self._pending.popleft()
                self._rows -= dropped.num_rows
                self.skipped += dropped.num_rows
            self._cond.notify()

    def pending(self) -> int:
        return self._rows

    WRITE_ROWS = 2048  # payloads computed chunk by chunk are stored in one insert of about this many

    def _run(self) -> None:
        ready: list[pa.Table] = []
        ready_rows = 0
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
            now = time.monotonic()
            if self._busy():
                self._busy_at = now
            if now - self._busy_at < self._quiet:
                time.sleep(0.05)
                continue
            with self._cond:
                if not self._pending:
                    continue
                work = self._pending.popleft()
                if work.num_rows > self._chunk:
                    self._pending.appendleft(work.slice(self._chunk))
                    work = work.slice(0, self._chunk)
                self._rows -= work.num_rows
                last = not self._pending
            try:
                table = _payloads_of(work)
                if table is not None:
                    ready.append(table)
                    ready_rows += table.num_rows
                if ready and (last or ready_rows >= self.WRITE_ROWS):
                    self._write(pa.concat_tables(ready))
                    ready, ready_rows = [], 0
            except Exception:  # noqa: BLE001 - a bad span must not stop indexing; readers compute it
                logging.getLogger("spanpipe.payloads").exception("computing %d triplet payloads failed",
                                                                  work.num_rows)
                ready, ready_rows = [], 0

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()
