"""An aiohttp application served from its own event-loop thread.

The collector's components are synchronous (threads and queues); each HTTP-facing one (the OTLP
HTTP receiver, the query API) runs its aiohttp app here, and does its CPU work through
`run_blocking` in a small thread pool so the loop stays responsive.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from aiohttp import web

T = TypeVar("T")


class HttpServer:
    def __init__(self, app: web.Application, host: str, port: int, name: str,
                 workers: int = 4, shutdown_timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.app, self.host, self.port, self.name = app, host, port, name
        self.ssl_context = ssl_context
        self.shutdown_timeout = shutdown_timeout
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"{name}-loop", daemon=True)
        self._runner: web.AppRunner | None = None

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
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, then stop the loop."""
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop)
            fut.result(timeout=self.shutdown_timeout + 5)
            self._runner = None
        self._stop_loop()
        self.executor.shutdown(wait=True)

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self.loop.is_closed():
            # An unclosed loop is closed by the garbage collector at exit, after its self-pipe is
            # gone: a traceback on every stop.
            self.loop.close()
