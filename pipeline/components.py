"""Every component type the collector knows: one line per component."""

from exporters import debug, duckdb, file
from processors import batch, reward, rollout
from receivers import otlp

FACTORIES = [
    otlp.factory,
    batch.factory,
    rollout.factory,
    reward.factory,
    duckdb.factory,
    debug.factory,
    file.factory,
]
