"""OTLP log requests (protobuf or OTLP/JSON) decoded into one Arrow table of the `logs` columns.

Older OTel GenAI instrumentations (openai-v2 among them) send prompts and completions as log
records — events named `gen_ai.user.message`, `gen_ai.choice`, … — tied to the LLM span by trace
and span id; the read side joins them back to their span (`spanpipe.warehouse.views`). Records
with a malformed trace or span id are rejected one by one (OTLP partial success); records with no
span context are kept (they are still logs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from spanpipe import columns
from spanpipe.errors import InvalidDataError
from spanpipe.otlp import INT64_LIMIT, any_value, attributes, parse_otlp_json
from spanpipe.spanbatch import dumps

LOGS_COLUMNS: dict[str, pa.DataType] = {c.name: c.arrow for c in columns.LOGS}


@dataclass(slots=True)
class DecodedLogs:
    table: pa.Table
    rejected: int
    message: str

    def __len__(self) -> int:
        return self.table.num_rows


def decode_logs(request: ExportLogsServiceRequest) -> DecodedLogs:
    cols: dict[str, list[Any]] = {c: [] for c in LOGS_COLUMNS}
    rejected, first_reason = 0, ""
    for rl in request.resource_logs:
        res_attrs = attributes(rl.resource.attributes)
        res_json = dumps(res_attrs).decode()
        service = res_attrs.get("service.name")
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                tid, sid = rec.trace_id, rec.span_id
                if len(tid) not in (0, 16) or len(sid) not in (0, 8):
                    rejected += 1
                    first_reason = first_reason or (f"trace_id must be empty or 16 bytes (got {len(tid)}), "
                                                    f"span_id empty or 8 bytes (got {len(sid)})")
                    continue
                if rec.time_unix_nano >= INT64_LIMIT or rec.observed_time_unix_nano >= INT64_LIMIT:
                    rejected += 1
                    first_reason = first_reason or "time_unix_nano and observed_time_unix_nano must be below 2^63"
                    continue
                attrs = attributes(rec.attributes)
                # The event name: LogRecord.event_name, or the older `event.name` attribute.
                event_name = rec.event_name or attrs.get("event.name")
                cols["trace_id"].append(tid.hex() or None)
                cols["span_id"].append(sid.hex() or None)
                cols["time_unix_nano"].append(rec.time_unix_nano or rec.observed_time_unix_nano)
                cols["observed_time_unix_nano"].append(rec.observed_time_unix_nano)
                cols["event_name"].append(event_name if isinstance(event_name, str) else None)
                cols["severity_number"].append(rec.severity_number)
                cols["severity_text"].append(rec.severity_text or None)
                cols["body"].append(dumps(any_value(rec.body)).decode() if rec.HasField("body") else None)
                cols["attributes"].append(dumps(attrs).decode())
                cols["resource_attributes"].append(res_json)
                cols["service_name"].append(service if isinstance(service, str) else None)
                cols["scope_name"].append(sl.scope.name or None)
    message = f"{rejected} log record(s) rejected; first: {first_reason}" if rejected else ""
    return DecodedLogs(pa.table({c: pa.array(v, LOGS_COLUMNS[c]) for c, v in cols.items()}), rejected, message)


def decode_logs_protobuf(data: bytes) -> DecodedLogs:
    try:
        request = ExportLogsServiceRequest.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidDataError(f"cannot decode ExportLogsServiceRequest: {exc}") from None
    return decode_logs(request)


def _log_id_holders(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for rl in doc.get("resourceLogs") or doc.get("resource_logs") or []:
        for sl in rl.get("scopeLogs") or rl.get("scope_logs") or []:
            yield from sl.get("logRecords") or sl.get("log_records") or []


def decode_logs_json(data: bytes) -> DecodedLogs:
    return decode_logs(parse_otlp_json(data, ExportLogsServiceRequest(), _log_id_holders))


def logs_response(decoded: DecodedLogs) -> ExportLogsServiceResponse:
    resp = ExportLogsServiceResponse()
    if decoded.rejected:
        resp.partial_success.rejected_log_records = decoded.rejected
        resp.partial_success.error_message = decoded.message
    return resp
