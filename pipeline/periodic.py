"""A daemon thread that calls a function every `interval` seconds until stopped — the memory
limiter's check, tail sampling's decisions, retention passes. An exception is logged and the
next tick runs anyway."""

from __future__ import annotations

import logging
import threading
from typing import Callable


class Periodic:
    def __init__(self, name: str, interval: float, tick: Callable[[], None], log: logging.Logger) -> None:
        self.interval, self.tick, self.log = interval, tick, log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - one failed tick must not end the loop
                self.log.exception("%s failed; trying again in %.1fs", self._thread.name, self.interval)
