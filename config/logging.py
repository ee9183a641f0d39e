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
