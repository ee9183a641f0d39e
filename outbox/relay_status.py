"""A relay that cannot reach the database says so where operators look.

It cannot write that to the database it cannot reach, so it writes it to Redis, which every relay
uses anyway and which `/healthz` and `outbox status` read: one hash, a field per relay, refreshed while
the relay keeps failing and disregarded `REPORT_TTL_SECONDS` after the last report (a relay that
recovers deletes its field at once; a killed one's is pruned by the next reader). One HGETALL per
probe, whatever else the shared Redis holds. If Redis is down too, the relay's log line is the report.
"""

import contextlib
import json
import logging
import time
from typing import Any

import redis
from django.conf import settings

from outbox.redis_client import fail_fast_client

logger = logging.getLogger("outbox.relay")

KEY = "cc:relay-unreachable"
REPORT_TTL_SECONDS = 60


def _client() -> redis.Redis:
    return fail_fast_client(settings.REDIS_URL)


def report_unreachable(*, relay_id: str, cause: str, since: float) -> None:
    """Record that `relay_id` has failed to connect since `since` (epoch seconds). Best effort."""
    with contextlib.suppress(redis.RedisError):
        body = json.dumps(
            {"relay_id": relay_id, "cause": cause, "since": since, "until": time.time() + REPORT_TTL_SECONDS}
        )
        _client().hset(KEY, relay_id, body)


def clear(*, relay_id: str) -> None:
    with contextlib.suppress(redis.RedisError):
        _client().hdel(KEY, relay_id)


def unreachable_relays() -> list[dict[str, Any]]:
    """`[{"relay_id", "cause", "for_seconds"}]` of the relays failing to connect now ([] if Redis is down)."""
    try:
        client = _client()
        fields = client.hgetall(KEY)
        now = time.time()
        reports = sorted((json.loads(v) for v in fields.values()), key=lambda r: r["relay_id"])
        expired = [r["relay_id"] for r in reports if r.get("until", 0) < now]
        if expired:
            client.hdel(KEY, *expired)
    except redis.RedisError:
        return []
    reports = [r for r in reports if r["relay_id"] not in expired]
    return [
        {"relay_id": r["relay_id"], "cause": r["cause"], "for_seconds": round(now - r["since"], 1)} for r in reports
    ]


# A database unreachable for longer than this is logged once, with its cause, and reported.
UNREACHABLE_AFTER_SECONDS = 3.0
REPORT_EVERY_SECONDS = 10.0


class ConnectionWatch:
    """The relay's view of its database connection: one warning when it drops; if it stays down past
    `UNREACHABLE_AFTER_SECONDS`, one error line with the cause and a report (refreshed every
    `REPORT_EVERY_SECONDS`) until a loop succeeds again."""

    def __init__(self, *, relay_id: str) -> None:
        self.relay_id = relay_id
        self.failing_since: float | None = None  # monotonic; None while connected
        self._since_epoch = 0.0
        self._said_unreachable = False
        self._next_report = 0.0

    def failed(self, exc: Exception) -> None:
        cause = " ".join(str(exc).split()) or repr(exc)  # psycopg's messages span lines
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since, self._since_epoch = now, time.time()
            logger.warning("relay %s lost its database connection, reconnecting: %s", self.relay_id, cause)
            return
        down_for = now - self.failing_since
        if down_for < UNREACHABLE_AFTER_SECONDS:
            return
        if not self._said_unreachable:
            self._said_unreachable = True
            logger.error(
                "relay %s cannot connect to the database (%.0f s, still trying): %s", self.relay_id, down_for, cause
            )
        if now >= self._next_report:
            self._next_report = now + REPORT_EVERY_SECONDS
            report_unreachable(relay_id=self.relay_id, cause=cause, since=self._since_epoch)

    def ok(self) -> None:
        if self.failing_since is None:
            return
        if self._said_unreachable:
            logger.info("relay %s reconnected after %.0f s", self.relay_id, time.monotonic() - self.failing_since)
            clear(relay_id=self.relay_id)
        self.failing_since, self._said_unreachable, self._next_report = None, False, 0.0
