"""Errors that cross component boundaries, and how each maps onto the wire.

The mapping follows the OpenTelemetry Collector (ARCHITECTURE.md#error-semantics): a receiver turns these into a gRPC
status or an HTTP status code, so a client knows whether to retry.
"""


class PipelineError(Exception):
    """Base of every error a consumer may raise to its caller."""

    grpc_code = "INTERNAL"
    http_status = 500
    retryable = False
    retry_after: float | None = None  # seconds a downstream asked us to wait, when it said


class BackPressureError(PipelineError):
    """A queue is full or memory is short: the client should retry later."""

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 429
    retryable = True


class TransientError(PipelineError):
    """A downstream is down for now: the client should retry."""

    grpc_code = "UNAVAILABLE"
    http_status = 503
    retryable = True


class InvalidDataError(PipelineError):
    """The payload cannot be decoded: retrying will not help."""

    grpc_code = "INVALID_ARGUMENT"
    http_status = 400


class PermanentError(PipelineError):
    """A downstream refused the data for good."""

    grpc_code = "INTERNAL"
    http_status = 500


class UnwritableDataError(PermanentError):
    """Some items of the request can never be written by this exporter (the data is at fault,
    not the destination). The exporter helper splits the request to find and drop only those."""


class RequestTooLargeError(PermanentError):
    """The destination refuses the request for its size: the exporter helper sends it in `parts`
    parts (two when the sender could not tell how far over the limit it is)."""

    def __init__(self, message: str, parts: int = 2) -> None:
        super().__init__(message)
        self.parts = max(2, parts)


class ConfigError(Exception):
    """A configuration problem; the message names the YAML path."""
