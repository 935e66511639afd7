"""Every component type the collector knows: one line per component."""

from exporters import debug, duckdb, file, otlp, otlphttp, parquet
from extensions import bearertokenauth, file_storage, health_check
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
from receivers import otlp as otlp_receiver

FACTORIES = [
    otlp_receiver.factory,
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
    parquet.factory,
    otlp.factory,
    otlphttp.factory,
    debug.factory,
    file.factory,
    file_storage.factory,
    health_check.factory,
    bearertokenauth.factory,
]
