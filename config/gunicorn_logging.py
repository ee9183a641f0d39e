"""Gunicorn's logger for the `web` process, with `?token=` values redacted from every access-log
line (the request line, the query string, the referer and any header atom) and error-log line."""

from typing import Any

from gunicorn.glogging import Logger

from realtime.redact import RedactTokenFilter, redact


class RedactingLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactTokenFilter) for f in log.filters):
                log.addFilter(RedactTokenFilter())

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        return {key: redact(value) if isinstance(value, str) else value for key, value in atoms.items()}
