"""The relay's LISTEN connection: a NOTIFY at an outbox COMMIT wakes the relay at once.

A connection of its own (autocommit, outside Django's), opened with exactly the parameters Django
connects with, so every DATABASE_URL form and every OPTIONS entry (sslmode included) holds for it too.
"""

import contextlib
from typing import Any

import psycopg
from django.db import connection

from outbox.services import NOTIFY_CHANNEL


def conninfo() -> dict[str, Any]:
    """Exactly what Django connects with: its own `get_connection_params()`, so every DATABASE_URL form
    that dj-database-url accepts (`?host=<socket dir>`, a percent-encoded socket path as the host,
    `sslmode` and every other option) reaches the LISTEN connection too. Only the Python-side cursor
    class and adapters are left out: a connection that only LISTENs uses neither."""
    params: dict[str, Any] = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return params


class Listener:
    """LISTENs on the outbox's channel; opened lazily, reopened after `close()`."""

    def __init__(self) -> None:
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None

    def listen(self) -> None:
        """LISTEN (if not already): call it before claiming, so a NOTIFY for anything that commits
        after the claim's snapshot waits on this connection until `wait()` reads it."""
        if self._connection is None:
            self._connection = psycopg.connect(**conninfo(), autocommit=True)
            self._connection.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def wait(self, timeout: float) -> None:
        """Return at the first NOTIFY (one already received included), or after `timeout` seconds."""
        self.listen()
        assert self._connection is not None
        for _ in self._connection.notifies(timeout=timeout, stop_after=1):
            break

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None
