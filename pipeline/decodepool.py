"""Decode worker processes: OTLP trace requests decoded on every core, not only the GIL's.

Turning a request's attributes into Python values is the collector's largest cost (about 1 µs per
attribute) and one interpreter does it on one core. The decode is a pure function from request
bytes to a SpanBatch, so a pool of worker processes runs it: a receiver thread sends the bytes to
a worker over a socket pair and waits (without the GIL) for the batch. Its columns come back as
Arrow arrays in one IPC stream (spanpipe.arrowcolumn) written into the channel's memory file (the
worker made it and passed it over at start); the collector reads it into its heap in one `pread`
without the GIL and reads the arrays from there: no Python object per span, no pickling of the columns, and
no pool thread of the collector process between a worker and the receiver (a process pool's
feeder and result threads cost a quarter of the GIL under load). The attribute, event and link JSON is already encoded, and the writer
stores the arrays as they are. A processor that reads a column gets its Python values, made from
the arrays when first read.
Everything stateful — the processors, rollout-affine state, the queues, the warehouse writer —
stays in the collector process, so nothing about a span depends on which worker decoded it; a
worker only computes the pure per-span parts processors offer (spanpipe.derived).

A worker that dies (OOM killer, kill -9) fails only the requests it held, with UNAVAILABLE /
503, which clients retry; the workers are started again, and while their interpreters start (as
at collector start-up) requests are decoded in the receiving thread instead of waiting for them. A
request is acknowledged only after its batch is back and delivered, so nothing acknowledged
depends on a worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import os
import pickle
import queue
import selectors
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spanpipe import derived, importguard
from spanpipe.errors import PipelineError, TransientError

if TYPE_CHECKING:
    from spanpipe.derived import Derivation
    from spanpipe.otlp import DecodedTraces

log = logging.getLogger("spanpipe.decodepool")


def workers_for(setting: int | str) -> int:
    """Decode workers for a `decode_workers` setting: `auto` is one per core beyond the first
    (the collector process keeps one core for the processors and the writer); 0 decodes in the
    receiving thread."""
    if setting != "auto":
        return int(setting)
    return max(len(os.sched_getaffinity(0)) - 1, 0)


def exit_when_parent_exits(parent: int) -> None:
    """A worker outlives a collector killed -9 (the pool's pipes stay open in the worker itself):
    it watches its parent and exits when the parent is gone."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


_derivations: list[Derivation] = []


def _worker_init(parent: int, derivations: list[Derivation]) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the collector drains, its workers
    # must keep decoding until it closes the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _derivations[:] = derivations
    threading.Thread(target=exit_when_parent_exits, args=(parent,), name="parent-watch", daemon=True).start()
    importguard.keep_out("pandas", "numpy")
    import spanpipe.arrowcolumn  # noqa: F401 - loaded before the first request, not during it
    import spanpipe.otlp_columns  # noqa: F401
    from spanpipe.procmem import collect_garbage_less_often

    collect_garbage_less_often()


@dataclass(slots=True)
class _Shipped:
    """A decoded request on its way back from a worker: its per-span columns as one Arrow IPC
    stream (spanpipe.arrowcolumn), read in the collector process without a Python object per span;
    the few per-request objects (resources, counts) and the derivations' results pickled. Between
    the processes the stream travels in a memory file, beside the pickle."""

    columns: Any  # the IPC stream: bytes-like
    exact: dict[str, dict[int, Any]]
    resources: list[Any]
    resource_index: list[int]
    nbytes: int
    rejected: int
    message: str
    derived_values: dict[str, Any]

    @staticmethod
    def pack(decoded: DecodedTraces, derived_values: dict[str, Any]) -> _Shipped:
        import pyarrow as pa

        from spanpipe.arrowcolumn import to_record_batch

        batch = decoded.batch
        record, exact = to_record_batch(batch)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, record.schema) as writer:
            writer.write_batch(record)
        return _Shipped(sink.getvalue(), exact, batch.resources, batch.resource_index, batch.nbytes,
                        decoded.rejected, decoded.message, derived_values)

    def unpack(self) -> DecodedTraces:
        import pyarrow as pa

        from spanpipe.arrowcolumn import from_record_batch
        from spanpipe.otlp import DecodedTraces
        from spanpipe.spanbatch import SpanBatch

        record = pa.ipc.open_stream(self.columns).read_next_batch()
        batch = SpanBatch(**from_record_batch(record, self.exact), resource_index=self.resource_index,  # type: ignore[arg-type]
                          resources=self.resources, nbytes=self.nbytes)
        derived.bind(batch, self.derived_values)
        return DecodedTraces(batch, self.rejected, self.message)


def _decode(body: bytes, json: bool) -> _Shipped:
    from spanpipe.otlp_columns import decode_traces

    decoded = decode_traces(body, json)
    batch = decoded.batch
    values = {}
    for d in _derivations:
        try:
            values[d.key] = d.derive(batch)
        except Exception:  # noqa: BLE001 - the processor computes it itself, and reports
            log.debug("derivation %s failed in a decode worker", d.key, exc_info=True)
    return _Shipped.pack(decoded, values)


# A worker starts by sending, on each channel, READY with that channel's memory file (a memfd,
# passed with SCM_RIGHTS). A request: body length, OTLP/JSON flag, then the body. A reply: kind,
# the pickled _Shipped's length (or the pickled exception's), the Arrow IPC stream's length; then
# the pickle. The stream itself is in the channel's memory file, from offset 0; the worker writes
# it again only for the channel's next request, after the collector has read it.
_REQUEST = struct.Struct("!QB")
_REPLY = struct.Struct("!BQQ")
_DECODED, _FAILED = 0, 1
_READY = b"R"
CHANNELS_PER_WORKER = 2  # the next request waits in the worker while the collector reads a result
_SOCKET_BUFFER = 4 << 20  # asked for; the kernel caps it (net.core.wmem_max)
_KEPT_MEMORY_FILE = 16 << 20  # a channel's memory file shrinks back to its last reply above this


def _recv_exactly(sock: socket.socket, n: int) -> bytearray:
    """`n` bytes from `sock`; EOFError when the other end closed first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if not k:
            raise EOFError("the other end closed the channel")
        got += k
    return buf


def _reply(sock: socket.socket, memory_file: int, shipped: _Shipped) -> None:
    columns = shipped.columns
    shipped.columns = b""
    meta = pickle.dumps(shipped, pickle.HIGHEST_PROTOCOL)
    view, written = memoryview(columns), 0
    while written < len(view):  # into pages the file already has: no new page to clear per reply
        written += os.pwrite(memory_file, view[written:], written)
    if os.fstat(memory_file).st_size > max(_KEPT_MEMORY_FILE, 2 * len(view)):
        os.ftruncate(memory_file, len(view))  # one huge request does not keep its size for ever
    sock.sendall(_REPLY.pack(_DECODED, len(meta), len(view)) + meta)


def _reply_failed(sock: socket.socket, exc: BaseException) -> None:
    try:
        meta = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - an exception that cannot travel is told by its text
        meta = pickle.dumps(PipelineError(f"{type(exc).__name__}: {exc}"), pickle.HIGHEST_PROTOCOL)
    sock.sendall(_REPLY.pack(_FAILED, len(meta), 0) + meta)


def _worker_main(parent: int, derivations: list[Derivation], channels: list[socket.socket]) -> None:
    """A decode worker: serves one request at a time from whichever of its channels has one, until
    the collector has closed them all."""
    _worker_init(parent, derivations)
    selector = selectors.DefaultSelector()
    for sock in channels:
        memory_file = os.memfd_create("spanpipe-decoded", os.MFD_CLOEXEC)
        socket.send_fds(sock, [_READY], [memory_file])
        selector.register(sock, selectors.EVENT_READ, memory_file)
    while selector.get_map():
        for key, _ in selector.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                _serve_one(sock, key.data)
            except (OSError, EOFError):  # the collector closed this channel (or broke off a reply)
                selector.unregister(sock)
                sock.close()
                os.close(key.data)


def _serve_one(sock: socket.socket, memory_file: int) -> None:
    size, json = _REQUEST.unpack(_recv_exactly(sock, _REQUEST.size))
    body = _recv_exactly(sock, size)
    try:
        shipped = _decode(body, bool(json))
    except Exception as exc:  # noqa: BLE001 - the caller raises it, as in-process decoding would
        _reply_failed(sock, exc)
    else:
        _reply(sock, memory_file, shipped)


def _read_memory_file(fd: int, size: int) -> bytes:
    """The reply's IPC stream, copied into the collector's heap in one read without the GIL: the
    arrays own their memory, and the worker may write the file's next reply. Mapping the file
    instead would keep one mapping per held request (tail sampling holds thousands; the kernel
    allows 65,530), and its pages out of the collector's RSS until first read."""
    data = os.pread(fd, size, 0)
    if len(data) != size:
        raise _WorkerGone(f"the reply's memory file holds {len(data)} of {size} bytes")
    return data


class _WorkerGone(Exception):
    """The worker behind a channel exited while it held a request."""


class _Refused(Exception):
    """The worker's own exception for a request (bytes that do not decode), read in full: the
    channel is in step and serves on."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(eq=False)
class _Channel:
    """The collector's end of one channel to a worker of pool generation `generation`."""

    sock: socket.socket
    generation: int
    memory_file: int = -1  # the worker's, for this channel's replies: received with READY

    def exchange(self, body: bytes, json: bool) -> _Shipped:
        try:
            self.sock.sendall(_REQUEST.pack(len(body), json))
            self.sock.sendall(body)
            kind, meta_size, columns_size = _REPLY.unpack(_recv_exactly(self.sock, _REPLY.size))
            meta = _recv_exactly(self.sock, meta_size)
            if kind == _FAILED:
                raise _Refused(pickle.loads(meta))
            shipped: _Shipped = pickle.loads(meta)
            shipped.columns = _read_memory_file(self.memory_file, columns_size)
            return shipped
        except (OSError, EOFError) as exc:
            raise _WorkerGone(str(exc)) from None

    def close(self) -> None:
        self.sock.close()
        if self.memory_file >= 0:
            os.close(self.memory_file)
            self.memory_file = -1


class DecodePool:
    """`workers` processes decoding trace requests and computing `derivations` (those of the
    processors downstream); `decode` blocks the calling thread only.

    Each worker has CHANNELS_PER_WORKER socket pairs; a receiving thread takes a free channel,
    sends the request's bytes and waits on that channel for the reply. The decoded columns come
    back in the channel's memory file (`_read_memory_file`), the few per-request objects pickled
    on the socket. No thread of the pool runs between requests."""

    def __init__(self, workers: int, name: str, derivations: list[Derivation] | None = None) -> None:
        self.workers, self.name = workers, name
        self.derivations = derivations or []
        self._lock = threading.Lock()
        self._free: queue.SimpleQueue[_Channel] = queue.SimpleQueue()
        self._generation = 0
        self._closed = False
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._retired: list[multiprocessing.process.BaseProcess] = []
        self._ready = threading.Event()
        self._start()

    def _start(self) -> None:
        """Start a generation of workers (with the lock held, or from __init__)."""
        self._generation += 1
        self._ready = threading.Event()
        context = multiprocessing.get_context("spawn")
        channels: list[_Channel] = []
        self._processes = []
        for _ in range(self.workers):
            ours, theirs = zip(*(socket.socketpair() for _ in range(CHANNELS_PER_WORKER)))
            for sock in (*ours, *theirs):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
            process = context.Process(target=_worker_main, args=(os.getpid(), self.derivations, list(theirs)),
                                      name=f"{self.name}-decode", daemon=True)
            process.start()
            for sock in theirs:
                sock.close()
            self._processes.append(process)
            channels += [_Channel(sock, self._generation) for sock in ours]
        threading.Thread(target=self._await_ready, args=(channels, self._ready), daemon=True,
                         name=f"{self.name}-decode-start").start()

    def _await_ready(self, channels: list[_Channel], ready: threading.Event) -> None:
        """Offer each channel once its worker has started (its interpreter and imports: ~1 s)."""
        for channel in channels:
            try:
                message, fds, _, _ = socket.recv_fds(channel.sock, len(_READY), 1)
            except OSError:
                message, fds = b"", []
            if message == _READY and len(fds) == 1:
                os.set_inheritable(fds[0], False)  # received descriptors are not close-on-exec
                channel.memory_file = fds[0]
            else:  # it died starting; a request on this channel finds that out and restarts the pool
                for fd in fds:
                    os.close(fd)
                log.error("%s: a decode worker exited while starting", self.name)
            self._release(channel)
        ready.set()

    def _release(self, channel: _Channel) -> None:
        if self._closed:
            channel.close()  # its worker exits once all its channels are closed
        else:
            self._free.put(channel)

    def ready(self, timeout: float | None = None) -> bool:
        """Whether the workers are up (waiting up to `timeout` seconds for them)."""
        return self._ready.wait(timeout)

    def decode(self, body: bytes, json: bool = False) -> DecodedTraces:
        while True:
            if self._closed:
                raise TransientError(f"{self.name}: shutting down")
            if not self._ready.is_set():
                # The workers are starting (collector start-up, or after one died): a request does
                # not wait a second for an interpreter; it is decoded here, as with decode_workers: 0.
                from spanpipe.otlp_columns import decode_traces

                return decode_traces(body, json)
            try:
                channel = self._free.get(timeout=0.05)
            except queue.Empty:
                continue
            if channel.generation != self._generation or self._closed:
                channel.close()  # a channel of workers since replaced
                continue
            break
        try:
            shipped = channel.exchange(body, json)
        except _Refused as refused:
            self._release(channel)
            raise refused.error from None
        except BaseException as exc:
            self._start_again(channel, exc)
            if isinstance(exc, _WorkerGone):
                raise TransientError(f"{self.name}: the decode worker handling this request exited; retry") from None
            raise
        self._release(channel)
        return shipped.unpack()

    def _start_again(self, channel: _Channel, exc: BaseException) -> None:
        """A channel whose worker is gone, or that is out of step with it (a reply left unread),
        never serves again: the workers of its generation are replaced (once, whichever request
        found out first)."""
        channel.close()
        with self._lock:
            if channel.generation == self._generation and not self._closed:
                log.error("%s: a decode worker exited or broke off (%s); starting the workers again", self.name, exc)
                self._retired += self._processes
                for process in self._processes:
                    process.kill()
                self._start()
            self._retired = [p for p in self._retired if p.is_alive()]  # is_alive() collects an exited one

    def close(self) -> None:
        with self._lock:
            self._closed = True
            processes, self._processes = self._processes, []
        while True:  # idle channels: closing them ends their workers (in-flight ones end with their request)
            try:
                self._free.get_nowait().close()
            except queue.Empty:
                break
        for process in processes + self._retired:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
