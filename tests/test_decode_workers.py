"""Decode worker processes (`receivers.otlp.decode_workers`): what lands is what in-process decoding
stores, processors see the same values, a worker killed -9 loses nothing acknowledged, and a
collector killed -9 leaves no worker behind."""

from __future__ import annotations

import gc
import math
import os
import pickle
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collector import Collector, grpc_export, wait_for
from otlp_requests import kv, make_request
from spanpipe import derived
from spanpipe.decodepool import CHANNELS_PER_WORKER, DecodePool, _decode
from spanpipe.derived import Derivation
from spanpipe.otlp import decode_traces_protobuf
from spanpipe.procmem import FIRST_GENERATION_THRESHOLD


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def decode_workers(pid: int) -> list[int]:
    """The collector's decode workers (its children running the pool's worker loop)."""
    def cmdline(p: int) -> str:
        try:
            return Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return ""
    return [p for p in children(pid) if "spawn_main" in cmdline(p)]


def odd_request():
    """Spans with every value type (bytes among them), NaN and ±Infinity, and plain ones."""
    request, ids = make_request(4)
    extra, more = make_request(3)
    for span in extra.resource_spans[0].scope_spans[0].spans:
        del span.attributes[:]
        span.attributes.extend([kv("gen_ai.operation.name", AnyValue(string_value="chat")),
                                kv("score", AnyValue(double_value=float("nan"))),
                                kv("hi", AnyValue(double_value=float("inf"))),
                                kv("n", AnyValue(int_value=7))])
    plain, plain_ids = make_request(5)
    for span in plain.resource_spans[0].scope_spans[0].spans:
        del span.attributes[:]
        span.attributes.extend([kv("agent.name", AnyValue(string_value="solver")), kv("step", AnyValue(int_value=1))])
    request.resource_spans.extend([*extra.resource_spans, *plain.resource_spans])
    return request, ids + more + plain_ids


def same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_value, a, b))
    return type(a) is type(b) and a == b


def test_every_column_from_a_worker_reads_as_decoded_in_process_also_after_take_and_concat():
    """A worker's batch arrives as Arrow arrays: each column read by a processor (ids, enum codes,
    times, events, links — an event attribute in bytes among them) gives the values in-process
    decoding gives, kept through take, concat with a batch decoded in process, and pickling."""
    from spanpipe.spanbatch import SpanBatch

    request, _ = odd_request()
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].events.add(time_unix_nano=5, name="tool.result").attributes.extend(
        [kv("blob", AnyValue(bytes_value=b"\x00\xff")), kv("n", AnyValue(int_value=3))])
    spans[1].links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, trace_state="k=v")
    spans[2].kind, spans[2].status.code, spans[2].status.message = 3, 2, "boom"
    del spans[3].events[:]
    body = request.SerializeToString()
    here = decode_traces_protobuf(body).batch
    there = pickle.loads(pickle.dumps(_decode(body, False))).unpack().batch

    def columns(batch: SpanBatch) -> dict[str, list]:
        return {c: list(getattr(batch, c)) for c in SpanBatch.CORE}

    expected = columns(here)
    assert expected["events"][0][-1]["attributes"]["blob"] == b"\x00\xff" and expected["events"][3] is None
    got = columns(there)
    assert all(same_value(expected[c], got[c]) for c in SpanBatch.CORE), [c for c in SpanBatch.CORE if not same_value(expected[c], got[c])]
    assert "boom" in there.status_message and "nothere" not in there.status_message  # unread: answered by Arrow
    picked = [0, 2, 1, 11]
    taken = pickle.loads(pickle.dumps(there.take(picked)))
    assert all(same_value([expected[c][i] for i in picked], list(getattr(taken, c))) for c in SpanBatch.CORE)
    mixed = SpanBatch.concat([there, here, there.take(picked)])
    want = {c: expected[c] + expected[c] + [expected[c][i] for i in picked] for c in SpanBatch.CORE}
    assert all(same_value(want[c], list(getattr(mixed, c))) for c in SpanBatch.CORE)
    reference = SpanBatch.concat([here, here, here.take(picked)]).to_arrow()
    assert mixed.to_arrow().equals(reference)
    assert SpanBatch.concat([there, there.take(picked)]).to_arrow().equals(
        SpanBatch.concat([here, here.take(picked)]).to_arrow())



def test_reward_dimension_rows_take_a_workers_ids_at_the_rewarded_spans_only():
    """The writer's `reward_dimensions` rows: a worker's id columns (Arrow, chunked after concat) are
    read at the rewarded spans only, never turned into Python strings; the rows equal those of the
    batch decoded in process (lists), also after concat and take."""
    from spanpipe.spanbatch import SpanBatch

    body = odd_request()[0].SerializeToString()
    here = decode_traces_protobuf(body).batch
    there = _decode(body, False).unpack().batch
    n = len(here)
    dims: list = [None] * n
    dims[1] = [{"name": "primary", "value": 1.0, "source": "agentlightning"},
               {"name": "length", "value": 3.0, "source": "agentlightning"}]
    dims[n - 1] = [{"name": "primary", "value": -1.0, "source": "extra"}]

    def rows(batch: SpanBatch) -> list[tuple]:
        return [tuple(r.values()) for r in batch.reward_dimensions_arrow().to_pylist()]

    ids = list(zip(here.trace_id, here.span_id))
    expected = [(*ids[1], 0, "primary", 1.0, "agentlightning"), (*ids[1], 1, "length", 3.0, "agentlightning"),
                (*ids[n - 1], 0, "primary", -1.0, "extra")]
    assert rows(here.with_columns(reward_dimensions=dims)) == expected
    worker = there.with_columns(reward_dimensions=dims)
    assert rows(worker) == expected
    twice = SpanBatch.concat([worker, worker.take([n - 1, 0, 1])])
    assert rows(twice) == expected + [expected[2], expected[0], expected[1]]
    assert there.trace_id._list is None and there.span_id._list is None
    assert twice.trace_id._list is None and twice.span_id._list is None

def test_a_batch_from_a_worker_is_the_batch_decoded_in_process():
    """What processors see (value types included: bytes, NaN, ±Infinity) and what the writer
    stores are the same whichever process decoded the request."""
    request, _ = odd_request()
    body = request.SerializeToString()
    here = decode_traces_protobuf(body).batch
    shipped = pickle.loads(pickle.dumps(_decode(body, False)))  # as the pool carries it
    there = shipped.unpack().batch
    assert len(there) == len(here) == 12
    assert all(same_value(a, b) for a, b in zip(here.attributes, there.attributes))
    assert isinstance(there.attributes[0]["bytes"], bytes)
    assert there.to_arrow().equals(here.to_arrow())
    # A processor that replaces one span's attributes: that span is encoded again, the rest reused.
    changed = list(there.attributes)
    changed[5] = {**changed[5], "redacted": True}
    from dataclasses import replace
    table = replace(there, attributes=changed).to_arrow()
    assert '"redacted":true' in table.column("attributes")[5].as_py()
    assert table.column("attributes")[6].as_py() == here.to_arrow().column("attributes")[6].as_py()
    assert there.take([7, 2]).to_arrow().equals(here.take([7, 2]).to_arrow())


def test_the_pool_decodes_refuses_bad_bytes_and_starts_again_after_a_worker_dies():
    pool = DecodePool(1, "test")
    try:
        request, ids = make_request(3)
        assert pool.ready(30)
        assert len(pool.decode(request.SerializeToString())) == len(ids)
        from spanpipe.errors import InvalidDataError, TransientError
        with pytest.raises(InvalidDataError):
            pool.decode(b"\xff\xff not protobuf")
        worker = decode_workers(os.getpid())
        assert len(worker) == 1
        os.kill(worker[0], signal.SIGKILL)
        wait_for(lambda: not alive(worker[0]), 10, "the worker gone")
        with pytest.raises(TransientError, match="retry"):
            pool.decode(request.SerializeToString())
        # While the new pool starts, requests are decoded in the calling thread; then by it.
        assert len(pool.decode(request.SerializeToString())) == len(ids)
        assert pool.ready(30)
        assert len(pool.decode(request.SerializeToString())) == len(ids)
        assert len(decode_workers(os.getpid())) == 1 and worker[0] not in decode_workers(os.getpid())
    finally:
        pool.close()


def memory_files(name: str) -> tuple[int, int]:
    """(descriptors open, mappings) of memory files called `name` in this process."""
    def target(fd: str) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            return ""
    fds = sum(1 for fd in os.listdir("/proc/self/fd") if target(fd).startswith(f"/memfd:{name}"))
    return fds, Path("/proc/self/maps").read_text().count(f"/memfd:{name}")


def test_concurrent_requests_each_get_their_own_batch_in_the_collectors_own_memory():
    """Sixteen threads share one worker's channels: each gets the spans it sent, none another's.
    The columns come back in the channel's memory file, copied into the collector's own memory
    (counted in its RSS, not held as one mapping per request).
    The pool runs no thread of its own between requests (a process pool's feeder and result
    threads took a quarter of the GIL under load)."""
    pool = DecodePool(1, "test")
    try:
        assert pool.ready(30)
        threads_before = {t.name for t in threading.enumerate()}
        requests_ = [make_request(20 + i) for i in range(16)]
        got: dict[int, list[list[tuple[str, str]]]] = {}
        errors: list[BaseException] = []

        def send(i: int) -> None:
            try:
                for _ in range(5):
                    batch = pool.decode(requests_[i][0].SerializeToString()).batch
                    got.setdefault(i, []).append(list(zip(batch.trace_id, batch.span_id)))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        for i, (_, ids) in enumerate(requests_):
            assert got[i] == [ids] * 5, f"request {i} got another's spans"
        assert {t.name for t in threading.enumerate()} <= threads_before

        request, ids = make_request(300)
        batch = pool.decode(request.SerializeToString()).batch
        assert list(zip(batch.trace_id, batch.span_id)) == ids
        assert batch.to_arrow().column("attributes").nbytes > 0
        # While the batch lives its columns are the collector's: nothing maps a worker's memory
        # file, and those open are the channels' own, one each, however many requests went by.
        assert memory_files("spanpipe-decoded") == (CHANNELS_PER_WORKER, 0)
        channels = [pool._free.get(timeout=5) for _ in range(CHANNELS_PER_WORKER)]
        assert not any(os.get_inheritable(c.memory_file) for c in channels), "a child process would inherit them"
        for c in channels:
            pool._free.put(c)
    finally:
        pool.close()


def test_a_reply_broken_off_halfway_never_answers_another_request(monkeypatch):
    """An error in the collector process while it reads a reply (here: no memory for it) leaves
    the rest of that reply unread: that channel must not carry another request, whose caller would
    read the old reply's bytes as its own."""
    from spanpipe import decodepool

    pool = DecodePool(1, "test")
    try:
        assert pool.ready(30)
        real = decodepool._recv_exactly
        calls = []

        def fail_once(sock, n):
            calls.append(n)
            if len(calls) == 1:
                raise MemoryError("no room for the reply")
            return real(sock, n)

        monkeypatch.setattr(decodepool, "_recv_exactly", fail_once)
        with pytest.raises(MemoryError):
            pool.decode(make_request(5)[0].SerializeToString())
        results: list = []

        def decode_three() -> None:
            for n in (6, 7, 8):
                request, ids = make_request(n)
                batch = pool.decode(request.SerializeToString()).batch
                results.append(list(zip(batch.trace_id, batch.span_id)) == ids)

        worker = threading.Thread(target=decode_three, daemon=True)
        worker.start()
        worker.join(30)
        assert results == [True, True, True]
        assert pool.ready(30)
        request, ids = make_request(9)
        batch = pool.decode(request.SerializeToString()).batch
        assert list(zip(batch.trace_id, batch.span_id)) == ids
    finally:
        pool.close()


def test_a_worker_serves_on_when_the_collector_drops_one_of_its_channels_mid_request():
    """The collector closes a channel whose reply it will not read (a receiving thread that broke
    off): the worker's reply fails, and it keeps serving its other channel."""
    from spanpipe.decodepool import _REQUEST

    pool = DecodePool(1, "test")
    try:
        assert pool.ready(30)
        worker = decode_workers(os.getpid())
        channel = pool._free.get(timeout=5)
        body = make_request(2000)[0].SerializeToString()
        channel.sock.sendall(_REQUEST.pack(len(body), False))
        channel.sock.sendall(body)
        channel.sock.close()
        time.sleep(0.5)  # the worker decodes it and finds no one to reply to
        for n in (3, 4):
            request, ids = make_request(n)
            batch = pool.decode(request.SerializeToString()).batch
            assert list(zip(batch.trace_id, batch.span_id)) == ids
        assert decode_workers(os.getpid()) == worker
    finally:
        pool.close()


def test_a_huge_request_does_not_keep_its_memory_file_large():
    pool = DecodePool(1, "test")
    try:
        assert pool.ready(30)
        big, ids = make_request(30000)
        assert len(pool.decode(big.SerializeToString())) == len(ids)
        channels = [pool._free.get(timeout=5) for _ in range(CHANNELS_PER_WORKER)]
        sizes = [os.fstat(c.memory_file).st_size for c in channels]
        assert max(sizes) > 16 << 20, sizes
        for c in channels:
            pool._free.put(c)
        for _ in range(CHANNELS_PER_WORKER):
            assert len(pool.decode(make_request(5)[0].SerializeToString())) == 5
        channels = [pool._free.get(timeout=5) for _ in range(CHANNELS_PER_WORKER)]
        assert all(os.fstat(c.memory_file).st_size < 1 << 20 for c in channels)
        for c in channels:
            pool._free.put(c)
    finally:
        pool.close()


def test_closing_the_pool_ends_its_workers():
    pool = DecodePool(2, "test")
    assert pool.ready(30)
    assert len(pool.decode(make_request(3)[0].SerializeToString())) == 3
    workers = decode_workers(os.getpid())
    assert len(workers) == 2
    started = time.monotonic()
    pool.close()
    assert not any(alive(w) for w in workers)
    assert time.monotonic() - started < 4, "the workers were killed after the grace time, not ended by the close"
    from spanpipe.errors import TransientError
    with pytest.raises(TransientError, match="shutting down"):
        pool.decode(make_request(3)[0].SerializeToString())


class GarbageCollectorSettings(Derivation):
    """How the process that derives is set to collect garbage (a worker, when a pool derives)."""

    name = key = "gc-settings"

    def derive(self, batch):
        return gc.get_threshold()[0], gc.get_freeze_count()


def test_a_decode_worker_collects_garbage_rarely():
    """Each request's dicts and lists are containers that live until the reply is sent; collected
    every 700 allocations, a worker walked them ~100 times per second under load (0.25 s of its
    CPU per 15 s run, 0.016 s at 20,000)."""
    pool = DecodePool(1, "test", [GarbageCollectorSettings()])
    try:
        assert pool.ready(30)
        decoded = pool.decode(make_request(3)[0].SerializeToString())
        threshold, frozen = derived.derived_value(decoded.batch, GarbageCollectorSettings.key)
    finally:
        pool.close()
    assert threshold == FIRST_GENERATION_THRESHOLD
    assert frozen > 1000, "what start-up made is frozen out of the collections"


def collector_with(tmp_path: Path, workers: int | str, name: str) -> Collector:
    d = tmp_path / name
    d.mkdir()
    c = Collector(d, processors={"rollout": None, "reward": None, "batch": {"timeout": "50ms"}})
    c.config["receivers"]["otlp"]["decode_workers"] = workers
    return c.rewrite()


def stored(c: Collector) -> list[dict]:
    r = requests.post(c.query_url + "/v1/sql", timeout=10, json={"sql": (
        "SELECT trace_id, span_id, attributes, events, links, resource_attributes, span_type, reward "
        "FROM spans ORDER BY trace_id, span_id")})
    assert r.status_code == 200, r.text
    return r.json()


def test_workers_store_exactly_what_in_process_decoding_stores(tmp_path):
    request, ids = odd_request()
    body = request.SerializeToString()
    json_request, json_ids = make_request(3)
    from google.protobuf import json_format

    json_body = json_format.MessageToDict(json_request)
    for span in (s for rs in json_body["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]):
        for key in ("traceId", "spanId", "parentSpanId"):  # OTLP/JSON ids are hex
            if key in span:
                import base64
                span[key] = base64.b64decode(span[key]).hex()
    rows = {}
    for workers in (0, 1):
        with collector_with(tmp_path, workers, f"w{workers}") as c:
            if workers:
                wait_for(lambda: len(decode_workers(c.proc.pid)) == 1, 20, "the decode worker started")
                assert "decoding span requests in 1 worker process(es) that also compute reward, rollout-ids" in c.log()
            else:
                assert "decoding span requests" not in c.log()
            assert grpc_export(c.grpc_endpoint, body)[0] == "OK"
            r = requests.post(c.http_url + "/v1/traces", json=json_body, timeout=10)
            assert r.status_code == 200, r.text
            wait_for(lambda: len(stored(c)) == len(ids) + len(json_ids), 15, "the spans stored")
            rows[workers] = stored(c)
            if workers:  # a worker makes Arrow, but loads no component code (pydantic: ~50 MiB each)
                maps = Path(f"/proc/{decode_workers(c.proc.pid)[0]}/maps").read_text()
                assert "_pydantic_core" not in maps
            assert c.stop() == 0
    assert rows[0] == rows[1]
    assert any('"bytes":"AAH+/w=="' in r["attributes"] for r in rows[1])
    assert any('"score":"NaN"' in r["attributes"] and '"hi":"Infinity"' in r["attributes"] for r in rows[1])


def test_a_worker_killed_mid_load_loses_nothing_acknowledged(tmp_path):
    """kill -9 of a decode worker while requests stream in: the requests it held are answered
    UNAVAILABLE and retried by the client, as an OTel SDK retries (UNAVAILABLE, RESOURCE_EXHAUSTED,
    DEADLINE_EXCEEDED: a request that waited for the new pool on a loaded machine may have been
    stored, and its retry is deduplicated); every span is stored exactly once."""
    c = collector_with(tmp_path, 2, "load")
    with c:
        wait_for(lambda: len(decode_workers(c.proc.pid)) == 2, 20, "the decode workers started")
        acked: list[tuple[str, str]] = []
        codes: list[str] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            for _ in range(n):
                request, ids = make_request(64)
                while True:
                    code, _ = grpc_export(c.grpc_endpoint, request, timeout=30)
                    with lock:
                        codes.append(code)
                    if code == "OK":
                        with lock:
                            acked.extend(ids)
                        break
                    assert code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"), code
                    time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(40,)) for _ in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) >= 64 * 20, 60, "some requests acknowledged")
        victim = decode_workers(c.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        for t in threads:
            t.join(120)
        assert len(acked) == 64 * 160
        wait_for(lambda: len(now := decode_workers(c.proc.pid)) == 2 and victim not in now, 20, "the pool started again")
        assert c.stop() == 0
    import duckdb
    con = duckdb.connect(str(c.db), read_only=True)
    got = con.execute("SELECT trace_id, span_id FROM spans").fetchall()
    con.close()
    assert len(got) == len(set(got)) == len(acked)
    assert set(got) == set(acked)
    if "UNAVAILABLE" in codes:  # the worker held a request when it died
        assert "a decode worker exited" in c.log()


def test_a_collector_killed_leaves_no_worker_behind(tmp_path):
    c = collector_with(tmp_path, 2, "kill")
    c.start()
    try:
        wait_for(lambda: len(decode_workers(c.proc.pid)) == 2, 20, "the decode workers started")
        kids = children(c.proc.pid)
        request, _ = make_request(8)
        assert grpc_export(c.grpc_endpoint, request)[0] == "OK"
    finally:
        c.kill()
    wait_for(lambda: not any(alive(p) for p in kids), 20, "the workers gone with the collector")


def test_workers_compute_the_processors_per_span_reading_and_processors_trust_it_only_while_valid():
    """The reward and rollout processors offer their stateless reading to the decode workers; the
    result equals what they compute themselves, and is ignored once a processor upstream replaced
    the columns it was read from."""
    from dataclasses import replace

    from spanpipe.component import FanOut
    from spanpipe.derived import derived_value, downstream
    from spanpipe.processors.reward import RewardConfig, RewardProcessor
    from spanpipe.processors.rollout import RolloutConfig, RolloutProcessor

    reward = RewardProcessor("reward", RewardConfig(extra_keys=["n"]), FanOut([]))
    rollout = RolloutProcessor("rollout", RolloutConfig(), reward)
    derivations = downstream(FanOut([rollout]))
    assert sorted(d.key.split(":")[0] for d in derivations) == ["reward", "rollout-ids"]
    request, _ = odd_request()
    for span in request.resource_spans[1].scope_spans[0].spans:
        span.attributes.extend([kv("agentlightning.rollout_id", AnyValue(string_value="ro-7"))])
    pool = DecodePool(1, "test", derivations)
    try:
        assert pool.ready(30)
        batch = pool.decode(request.SerializeToString()).batch
    finally:
        pool.close()
    here = decode_traces_protobuf(request.SerializeToString()).batch
    ids = derived_value(batch, rollout.derivation().key)
    assert ids is not None and ids == rollout.derivation().derive(here)
    assert ids.rollouts.count("ro-7") == 3
    read = derived_value(batch, reward.derivation().key)
    assert read is not None and read.reward == reward.reader.read(here).reward
    assert read.reward.count(7) == 3  # extra_keys: ["n"]
    # The processors' output is the same whichever way they got the reading.
    outputs = []
    for b in (batch, here):
        fresh = RolloutProcessor("rollout", RolloutConfig(idle_timeout=0), reward)
        fresh.start()
        try:
            outputs.append(reward.process(fresh.process(b)).extra)
        finally:
            fresh.shutdown()
    assert same_value(outputs[0], outputs[1])
    changed = replace(batch, attributes=[{} for _ in batch.attributes])
    assert derived_value(changed, reward.derivation().key) is None
    assert derived_value(batch.take([0, 1]), rollout.derivation().key) is None


def test_the_default_chain_never_builds_attribute_dicts_in_the_collector_process():
    """rollout and reward take their reading from the workers; batch concatenates; the writer
    stores the arrays: every per-span column stays Arrow (attributes, events and links as JSON) all
    the way, unread, and what is stored is what in-process decoding stores. Reading them (any other
    processor) gives the exact values."""
    from spanpipe.component import FanOut
    from spanpipe.derived import downstream
    from spanpipe.processors.reward import RewardConfig, RewardProcessor
    from spanpipe.processors.rollout import RolloutConfig, RolloutProcessor
    from spanpipe.arrowcolumn import ArrowColumn, JsonColumn
    from spanpipe.spanbatch import SpanBatch

    reward = RewardProcessor("reward", RewardConfig(), FanOut([]))
    bodies = [odd_request()[0].SerializeToString() for _ in range(3)]
    pool = DecodePool(1, "test", downstream(FanOut([RolloutProcessor("rollout", RolloutConfig(), reward)])))
    try:
        assert pool.ready(30)
        shipped = [pool.decode(b).batch for b in bodies]
    finally:
        pool.close()
    outs = []
    for batches in (shipped, [decode_traces_protobuf(b).batch for b in bodies]):
        rollout = RolloutProcessor("rollout", RolloutConfig(idle_timeout=0), reward)
        rollout.start()
        try:
            merged = SpanBatch.concat([reward.process(rollout.process(b)) for b in batches])
        finally:
            rollout.shutdown()
        outs.append((merged, merged.to_arrow()))
    (merged, table), (_, reference) = outs
    for c in SpanBatch.CORE:
        column = getattr(merged, c)
        assert isinstance(column, (ArrowColumn, JsonColumn)), c
        assert (column._list if isinstance(column, ArrowColumn) else column._values) is None, f"{c} was read"
    assert table.drop(["sequence_id"]).equals(reference.drop(["sequence_id"]))
    picked = pickle.loads(pickle.dumps(merged.take([1, 16, 32])))  # as the persistent queue keeps it
    assert isinstance(picked.attributes[0]["bytes"], bytes) and math.isnan(picked.attributes[1]["score"])
    assert picked.attributes[2] == {"agent.name": "solver", "step": 1}
    assert picked.to_arrow().column("attributes").equals(reference.take([1, 16, 32]).column("attributes"))


def test_redaction_replaces_only_the_spans_it_changes_and_keeps_the_workers_json_for_the_rest():
    """A span with a secret is stored masked, in its attributes and its events; every other span
    keeps the JSON its worker made (nothing decoded into dicts is encoded again), and what is
    stored is what redacting an in-process batch stores."""
    from spanpipe.arrowcolumn import JsonColumn
    from spanpipe.component import FanOut
    from spanpipe.processors.redaction import RedactionConfig, RedactionProcessor

    request, _ = odd_request()
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].attributes.extend([kv("note", AnyValue(string_value="mail bob@example.com please"))])
    spans[2].events.add(time_unix_nano=9, name="tool").attributes.extend(
        [kv("out", AnyValue(string_value="key sk-abcdefghijklmnopqrstu"))])
    body = request.SerializeToString()
    redaction = RedactionProcessor("redaction", RedactionConfig(
        allow_all_keys=True, blocked_values=["sk-[A-Za-z0-9_-]{16,}", "[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}"]),
        FanOut([]))
    here = redaction.process(decode_traces_protobuf(body).batch)
    shipped = pickle.loads(pickle.dumps(_decode(body, False))).unpack().batch
    there = redaction.process(shipped)
    assert isinstance(there.attributes, JsonColumn) and isinstance(there.events, JsonColumn)
    assert there.attributes[1]["note"] == "mail **** please" and there.attributes[1]["redaction.masked.count"] == 1
    assert there.events[2][-1]["attributes"]["out"] == "key ****"
    unchanged = [i for i in range(len(there)) if i not in (1, 2)]
    assert there.attributes.texts.take(unchanged).equals(shipped.attributes.texts.take(unchanged))
    assert there.to_arrow().equals(here.to_arrow())
    clean = there.take(unchanged)
    assert redaction.process(clean) is clean  # nothing to redact: the batch passes as it is
