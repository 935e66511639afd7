"""Every component type the collector knows: one line per component."""

from exporters import debug, duckdb, file
from processors import batch, memory_limiter, probabilistic_sampler, reward, rollout
from receivers import otlp

FACTORIES = [
    otlp.factory,
    memory_limiter.factory,
    batch.factory,
    probabilistic_sampler.factory,
    rollout.factory,
    reward.factory,
    duckdb.factory,
    debug.factory,
    file.factory,
]
