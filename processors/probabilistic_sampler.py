"""The `probabilistic_sampler` processor: head sampling by trace id, otelcol's algorithms.

* `mode: hash_seed` (default): FNV-1a 32-bit over the seed's 4 little-endian bytes followed by the
  16 trace-id bytes, masked to 14 bits; the trace is kept when that is below
  `uint32(sampling_percentage × 163.84)`. Same ids, same seed → same decisions as otelcol.
* `mode: proportional`: OTel consistent probability sampling. Randomness R = the tracestate
  `ot=rv:` value or the trace id's last 56 bits; the rejection threshold is
  T = (1 − p) × 2^56, where p is the configured ratio times the probability already recorded in
  `ot=th:` (if any); a span is kept when R ≥ T, and `ot=th:` is written into its tracestate.
* `mode: equalizing`: like proportional, but the threshold is the larger of the configured and the
  incoming one (the trace ends at the configured probability unless it was already lower).

A span attribute `sampling.priority` overrides: 0 drops, > 0 keeps.
"""

from __future__ import annotations

from dataclasses import replace

import re
from typing import Literal

from pydantic import Field

from spanpipe.component import BatchTransform, Consumer
from spanpipe.component import ComponentConfig
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch
from spanpipe.telemetry import counters

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
NUM_HASH_BUCKETS = 0x4000  # 14 bits
BUCKET_MASK = NUM_HASH_BUCKETS - 1
PERCENTAGE_SCALE = NUM_HASH_BUCKETS / 100.0  # 163.84
MAX_THRESHOLD = 1 << 56

_OT_FIELD = re.compile(r"(?:^|;)(th|rv):([0-9a-f]+)")


def fnv1a_32(data: bytes) -> int:
    h = FNV_OFFSET
    for byte in data:
        h ^= byte
        h = (h * FNV_PRIME) & 0xFFFFFFFF
    return h


def hash_seed_keeps(trace_id: bytes, seed: int, percentage: float) -> bool:
    scaled = int(percentage * PERCENTAGE_SCALE) & 0xFFFFFFFF
    h = fnv1a_32((seed & 0xFFFFFFFF).to_bytes(4, "little") + trace_id) & BUCKET_MASK
    return h < scaled


def probability_to_threshold(p: float, precision: int = 4) -> int:
    """Rejection threshold for probability p, rounded to `precision` hex digits as otelcol does."""
    if p >= 1:
        return 0
    if p <= 0:
        return MAX_THRESHOLD
    exact = round((1 - p) * MAX_THRESHOLD)
    # Keep `precision` significant hex digits (counting from the first of the 14), rounding.
    digits = 14
    lead_zeros = 0
    probe = exact
    while digits - lead_zeros > 0 and probe < (1 << (4 * (digits - lead_zeros - 1))):
        lead_zeros += 1
    drop = max(0, digits - lead_zeros - precision) * 4
    if drop:
        exact = ((exact + (1 << (drop - 1))) >> drop) << drop
    return min(exact, MAX_THRESHOLD - 1)


def encode_threshold(t: int) -> str:
    if t == 0:
        return "0"
    return f"{t:014x}".rstrip("0")


def decode_threshold(text: str) -> int | None:
    if not text or len(text) > 14:
        return None
    try:
        return int(text.ljust(14, "0"), 16)
    except ValueError:
        return None


def _ot_fields(trace_state: str) -> tuple[str, dict[str, str]]:
    """The `ot=` value of a W3C tracestate and its sub-fields."""
    for member in trace_state.split(","):
        key, _, value = member.strip().partition("=")
        if key == "ot":
            return value, {m.group(1): m.group(2) for m in _OT_FIELD.finditer(value)}
    return "", {}


def with_threshold(trace_state: str, threshold: int) -> str:
    members = [m.strip() for m in trace_state.split(",") if m.strip()]
    ot_value, _ = _ot_fields(trace_state)
    parts = [p for p in ot_value.split(";") if p and not p.startswith("th:")] if ot_value else []
    parts.insert(0, f"th:{encode_threshold(threshold)}")
    others = [m for m in members if not m.startswith("ot=")]
    return ",".join([f"ot={';'.join(parts)}", *others])


class ProbabilisticSamplerConfig(ComponentConfig):
    sampling_percentage: float = Field(0, ge=0, le=100)
    hash_seed: int = Field(0, ge=0, le=0xFFFFFFFF)
    mode: Literal["hash_seed", "proportional", "equalizing"] = "hash_seed"
    sampling_precision: int = Field(4, ge=1, le=14)
    fail_closed: bool = True


class ProbabilisticSampler(BatchTransform):
    def __init__(self, component_id: str, config: ProbabilisticSamplerConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.config = config
        self.threshold = probability_to_threshold(config.sampling_percentage / 100, config.sampling_precision)

    def decide(self, trace_id_hex: str, trace_state: str) -> tuple[bool, str]:
        """(keep, new tracestate) for one span."""
        cfg = self.config
        tid = bytes.fromhex(trace_id_hex)
        if cfg.mode == "hash_seed":
            return hash_seed_keeps(tid, cfg.hash_seed, cfg.sampling_percentage), trace_state
        _, fields = _ot_fields(trace_state)
        if "rv" in fields and len(fields["rv"]) == 14:
            randomness = int(fields["rv"], 16)
        else:
            randomness = int.from_bytes(tid[9:], "big")  # the last 56 bits
        incoming = decode_threshold(fields["th"]) if "th" in fields else None
        if "th" in fields and incoming is None and cfg.fail_closed:
            return False, trace_state
        if cfg.mode == "equalizing":
            threshold = max(self.threshold, incoming or 0)
        else:
            p_in = 1.0 if incoming is None else (MAX_THRESHOLD - incoming) / MAX_THRESHOLD
            threshold = probability_to_threshold(p_in * cfg.sampling_percentage / 100, cfg.sampling_precision)
        keep = randomness >= threshold
        return keep, (with_threshold(trace_state, threshold) if keep else trace_state)

    def process(self, batch: SpanBatch) -> SpanBatch:
        keep: list[int] = []
        states = list(batch.trace_state)
        decided: dict[tuple[str, str], tuple[bool, str]] = {}
        for i in range(len(batch)):
            prio = batch.attributes[i].get("sampling.priority")
            if isinstance(prio, (int, float)) and not isinstance(prio, bool):
                if prio > 0:
                    keep.append(i)
                continue
            key = (batch.trace_id[i], batch.trace_state[i])
            d = decided.get(key)
            if d is None:
                d = decided[key] = self.decide(*key)
            if d[0]:
                keep.append(i)
                states[i] = d[1]
        dropped = len(batch) - len(keep)
        if dropped:
            counters.add("processor_probabilistic_sampler_count_traces_sampled", dropped,
                         processor=self.id, sampled="false")
        out = replace(batch, trace_state=states)
        return out if not dropped else out.take(keep)


factory = Factory("probabilistic_sampler", "processors", ProbabilisticSamplerConfig,
                  lambda cid, cfg, nxt: ProbabilisticSampler(cid, cfg, nxt))
