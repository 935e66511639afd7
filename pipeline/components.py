"""Every component type the collector knows: one line per component."""

from exporters import debug, duckdb, file
from processors import (
    attributes,
    batch,
    filter,
    memory_limiter,
    probabilistic_sampler,
    redaction,
    resource,
    reward,
    rollout,
    tail_sampling,
)
from receivers import otlp

FACTORIES = [
    otlp.factory,
    memory_limiter.factory,
    batch.factory,
    probabilistic_sampler.factory,
    tail_sampling.factory,
    attributes.factory,
    resource.factory,
    filter.factory,
    redaction.factory,
    rollout.factory,
    reward.factory,
    duckdb.factory,
    debug.factory,
    file.factory,
]
