"""Process logging: one JSON object per line (for CloudWatch and log shippers) or plain text.

Every record carries ``time``, ``level``, ``logger`` and ``message``; the ``extra={...}``
fields a caller passes (the access log's method/status/duration_ms/request_id/principal,
the activity log's action/resource) become top-level keys, and the current request id is
added when the record is written inside an RPC, and the trace/span id inside a span. Configured once by the CLI from settings.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

from opentelemetry import trace

from common.cloudwatch_logs import CloudWatchLogsHandler, cloudwatch_handler
from common.context import current_request_id
from common.settings import Settings

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

# Third-party loggers that narrate every request at INFO; their warnings still come through.
QUIET_LOGGERS = ("werkzeug", "pgserver", "botocore", "aiobotocore", "urllib3", "asyncio")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record (plus the request id of the current RPC, if any)."""
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
    if "request_id" not in fields:
        request_id = current_request_id()
        if request_id is not None:
            fields["request_id"] = request_id
    span = trace.get_current_span().get_span_context()
    if span.is_valid and "trace_id" not in fields:
        # Lets a log line be found from its trace (and the trace from the line).
        fields["trace_id"] = format(span.trace_id, "032x")
        fields["span_id"] = format(span.span_id, "016x")
    return fields


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON; values JSON cannot encode become strings."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extra_fields(record)
        if not fields:
            return line
        first, newline, rest = line.partition("\n")
        pairs = " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{first} [{pairs}]{newline}{rest}"


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Route every logger to one stderr handler with the configured format and level, and
    to CloudWatch Logs as JSON when ``cloudwatch_log_group`` is set."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
        if isinstance(existing, CloudWatchLogsHandler):
            existing.close()
    root.addHandler(handler)
    shipped = cloudwatch_handler(settings)
    if shipped is not None:
        shipped.setFormatter(JsonFormatter())
        root.addHandler(shipped)
    root.setLevel(settings.log_level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return handler
