"""Exponential backoff with jitter, as otelcol's retry_on_failure computes it."""

from __future__ import annotations

import random
import time

from spanpipe.exporterhelper.config import RetryConfig


class Backoff:
    def __init__(self, config: RetryConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self._interval = config.initial_interval

    def next_delay(self, hint: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None when max_elapsed_time is spent.
        `hint` is a server's Retry-After / RetryInfo, used when given (capped by max_interval)."""
        cfg = self.config
        if not cfg.enabled:
            return None
        if hint is not None:
            delay = min(max(hint, 0.0), cfg.max_interval)
        else:
            spread = self._interval * cfg.randomization_factor
            delay = random.uniform(self._interval - spread, self._interval + spread)
            self._interval = min(self._interval * cfg.multiplier, cfg.max_interval)
        if cfg.max_elapsed_time and time.monotonic() + delay - self.started > cfg.max_elapsed_time:
            return None
        return delay
