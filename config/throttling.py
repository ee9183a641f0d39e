"""The API's rate limits (DRF throttles), counted in Redis so that every web process shares them.

A student is limited by their token's user, anyone else by address (`client_ip`, which the admin
login lockout uses too). The counters are a guard, not a record: if Redis cannot be reached the
request is let through (and logged), so an outage of Redis never turns into API errors.
"""

import logging
from typing import Any

import redis
from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


def client_ip(request: HttpRequest) -> str:
    """The client's address: the peer's, or behind TRUSTED_PROXY_COUNT proxies the address the
    outermost of them saw (X-Forwarded-For is appended to by each proxy; what the client wrote in
    it, left of that, is not trusted). The same rule as DRF's NUM_PROXIES."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.TRUSTED_PROXY_COUNT and forwarded:
        addresses = [a.strip() for a in forwarded.split(",")]
        return addresses[-min(settings.TRUSTED_PROXY_COUNT, len(addresses))]
    return str(request.META.get("REMOTE_ADDR", ""))


class _SharedThrottle(SimpleRateThrottle):
    def __init__(self) -> None:
        self.cache = caches["throttle"]
        super().__init__()

    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except (redis.RedisError, OSError) as exc:
            logger.warning("rate limit not applied (Redis unavailable): %s", exc)
            return True


class StudentRateThrottle(_SharedThrottle):
    """API_THROTTLE_STUDENT_RATE per authenticated student."""

    scope = "student"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": user.pk}


class AnonymousRateThrottle(_SharedThrottle):
    """API_THROTTLE_ANON_RATE per address, for requests without a student (the schema and docs)."""

    scope = "anonymous"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request)}
