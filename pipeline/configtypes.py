"""Value types shared by component configs: durations ("200ms", "1m30s"), sizes, endpoints."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """A Go-style duration ("200ms", "1m30s") as seconds; 0 is allowed bare."""
    if isinstance(value, bool):
        raise ValueError("invalid duration")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0.0
        raise ValueError("invalid duration: give a unit, e.g. '200ms', '5s', '1m'")
    if not isinstance(value, str):
        raise ValueError("invalid duration")
    text = value.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration '{value}': use a number and a unit (ns, us, ms, s, m, h), e.g. '200ms'")
    return total


def _non_negative_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError("duration must not be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(_non_negative_duration)]


def parse_endpoint(value: object) -> tuple[str, int]:
    """"host:port" → (host, port); an empty host means 127.0.0.1, our safe default."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"invalid endpoint {value!r}: expected 'host:port'")
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"invalid endpoint {value!r}: port must be a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid endpoint {value!r}: port must be 0-65535")
    return host, port


def _endpoint(value: object) -> str:
    parse_endpoint(value)
    return str(value)


Endpoint = Annotated[str, BeforeValidator(_endpoint)]
