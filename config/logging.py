"""Log formatting. LOG_FORMAT=json gives one JSON object per line, with the outbox's context fields
(event_id, correlation_id, delivery_id, sink, relay_id) when a log call passes them in `extra`."""

import json
import logging
from datetime import UTC, datetime

CONTEXT_FIELDS = ("event_id", "correlation_id", "delivery_id", "sink", "relay_id", "student_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class ClientErrorsWithoutTraceback(logging.Filter):
    """A request Django refuses as suspicious (a bad Host header, too many fields...) is answered 400
    and logged by `django.security.*` with the exception's traceback: keep the one line, drop the
    traceback (it is the client's error, not ours, and a traceback in the log reads as a crash)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.security."):
            record.exc_info, record.exc_text = None, None
        return True
