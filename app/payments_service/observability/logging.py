"""Log set-up: readable text for terminals, one JSON object per line for collectors.

Either way one record is one line: in text, control characters in a message (a newline, an
ANSI escape) are written escaped, so nothing that reaches a message can forge a line or
repaint a terminal; JSON escapes them by itself.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from opentelemetry import trace

TEXT_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"

#: Structured fields the access log passes with ``extra=``; JSON lines carry them as keys.
ACCESS_FIELDS = ("grpc_method", "grpc_code", "duration_ms", "peer", "trace_id")

#: C0 controls, DEL and C1 controls -> a visible escape (\n, \x1b, ...).
_ESCAPES = {
    code: ("\\n" if code == 10 else "\\t" if code == 9 else f"\\x{code:02x}")
    for code in (*range(0x20), *range(0x7F, 0xA0))
}


def escape_controls(text: str) -> str:
    """``text`` with every control character written as a visible escape."""
    return text.translate(_ESCAPES)


class TextFormatter(logging.Formatter):
    """The text format, one line per record (tracebacks keep their own lines, escaped)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:
        text = super().formatException(ei)  # type: ignore[arg-type]
        return "\n".join(escape_controls(line) for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, and when logged inside
    a span its ``trace_id`` and ``span_id`` (the ids Jaeger shows), plus access-log fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for name in ACCESS_FIELDS:  # an access-log line without a span names its trace id
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """Send every log record to stderr in the chosen format, replacing earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
