"""What every exporter shares, as in otelcol's exporterhelper: a sending queue (in memory or on
disk through the `file_storage` extension), retry with exponential backoff, a per-send timeout.

An exporter subclasses `QueuedExporter` and implements `send(batch, timeout)`; the helper decides
when and how often it is called.
"""

from spanpipe.exporterhelper.config import ExporterHelperConfig, QueueBatchConfig, QueueConfig, RetryConfig
from spanpipe.exporterhelper.exporter import QueuedExporter

__all__ = ["ExporterHelperConfig", "QueueBatchConfig", "QueueConfig", "QueuedExporter", "RetryConfig"]
