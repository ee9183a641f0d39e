"""Keep tokens out of server logs.

A browser can authenticate a WebSocket only with `?token=<key>`, and uvicorn logs each WebSocket
handshake with its query string ('"WebSocket /ws/events/?token=..." [accepted]'), even with the access
log off. This filter rewrites the value of any `token` query parameter in a log record to `[redacted]`.
"""

import logging
import re
from typing import Any

_TOKEN_PARAM = re.compile(r"([?&]token=)[^&\s\"']+", re.IGNORECASE)
# uvicorn's handshake lines go to "uvicorn.error"; HTTP request lines to "uvicorn.access".
REDACTED_LOGGERS = ("uvicorn.error", "uvicorn.access", "django.request", "django.channels.server")


def redact(text: str) -> str:
    """`text` with every `token=` query value replaced."""
    return _TOKEN_PARAM.sub(r"\1[redacted]", text)


def _redact_arg(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactTokenFilter(logging.Filter):
    """Rewrites the message and its string arguments in place; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


def install() -> None:
    """Attach the filter to the loggers that may see a handshake's query string (idempotent)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokenFilter) for f in logger.filters):
            logger.addFilter(RedactTokenFilter())
