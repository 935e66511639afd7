"""An aiohttp application served from its own event-loop thread.

The collector's components are synchronous (threads and queues); each HTTP-facing one (the OTLP
HTTP receiver, the query API) runs its aiohttp app here, and does its CPU work through
`run_blocking` in a small thread pool so the loop stays responsive.

Stopping drains on our terms, not only aiohttp's: its graceful shutdown marks kept-alive
connections closing and from then on drops what they receive, so a client that had just begun
sending its next request on one waits for an answer until its own timeout, and the drain with it
(up to 30 s under steady load). Here, once stopping, every response closes its connection, a
connection serving no request is closed at once (its client sees the close and retries), and
only requests being served are waited for.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from aiohttp import web

T = TypeVar("T")


class HttpServer:
    def __init__(self, app: web.Application, host: str, port: int, name: str,
                 workers: int = 4, shutdown_timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None, sock: socket.socket | None = None) -> None:
        """`sock`: a socket already listening (one several processes accept from) instead of
        binding `host:port`."""
        self.app, self.host, self.port, self.name = app, host, port, name
        self.sock = sock
        self.ssl_context = ssl_context
        self.shutdown_timeout = shutdown_timeout
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"{name}-loop", daemon=True)
        self._runner: web.AppRunner | None = None
        self._draining = False
        self._serving: set[Any] = set()  # the connections serving a request (aiohttp RequestHandlers)
        app.middlewares.insert(0, self._track_requests)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.loop.run_in_executor(self.executor, fn, *args)

    def start(self) -> None:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=15)
        except OSError as exc:
            self._stop_loop()
            raise OSError(f"{self.name}: cannot listen on {self.host}:{self.port} "
                          f"({exc.strerror or exc})") from None
        except BaseException:
            self._stop_loop()
            raise

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=self.shutdown_timeout)
        await self._runner.setup()
        site: web.BaseSite
        if self.sock is not None:
            site = web.SockSite(self._runner, self.sock, ssl_context=self.ssl_context)
        else:
            site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    @web.middleware
    async def _track_requests(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Marks a connection as serving a request until its response is written (so the drain
        waits for it), and closes it after that response once the drain has begun."""
        connection = request.protocol
        if self._draining and connection.transport is None:
            # Closed by the drain before its turn: never processed, never answered.
            raise web.HTTPServiceUnavailable(text="shutting down")
        self._serving.add(connection)
        try:
            response = await handler(request)
            if self._draining:
                response.force_close()
            if not response.prepared:
                await response.prepare(request)
                await response.write_eof()
            return response
        finally:
            self._serving.discard(connection)

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, then stop the loop."""
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._drain(), self.loop)
            fut.result(timeout=self.shutdown_timeout + 5)
            self._runner = None
        self._stop_loop()
        self.executor.shutdown(wait=True)

    async def _drain(self) -> None:
        runner = self._runner
        assert runner is not None
        self._draining = True
        for site in list(runner.sites):
            await site.stop()
        deadline = self.loop.time() + self.shutdown_timeout
        while runner.server is not None:
            for connection in runner.server.connections:
                if connection not in self._serving:
                    connection.force_close()  # its transport flushes what was written, then closes
            if not self._serving or self.loop.time() > deadline:
                break
            await asyncio.sleep(0.02)
        try:  # what is left of shutdown_timeout, not another one: aiohttp's cleanup waits too
            await asyncio.wait_for(runner.cleanup(), max(deadline - self.loop.time(), 1.0))
        except asyncio.TimeoutError:
            logging.getLogger("spanpipe.http").warning(
                "%s: %d request(s) still being served after %.0fs; stopping without them",
                self.name, len(self._serving), self.shutdown_timeout)
            for connection in runner.server.connections if runner.server is not None else ():
                connection.force_close()  # their clients see the close instead of waiting
            left = [t for t in asyncio.all_tasks(self.loop) if t is not asyncio.current_task()]
            for task in left:  # this loop is this server's own: whatever still runs is its request
                task.cancel()
            if left:
                await asyncio.wait(left, timeout=1.0)

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self.loop.is_closed():
            # An unclosed loop is closed by the garbage collector at exit, after its self-pipe is
            # gone: a traceback on every stop.
            self.loop.close()
