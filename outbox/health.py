"""/healthz: can this deployment take payments and deliver their events right now?"""

from datetime import timedelta

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry

from outbox.models import RelayHeartbeat
from outbox.relay_status import unreachable_relays

RELAY_STALE_AFTER = timedelta(seconds=30)


def healthz_view(request: HttpRequest) -> JsonResponse:
    """200 when the database, Redis and at least one relay (beat within 30 s) are up, and no relay
    reports that it cannot connect to the database; 503 otherwise.

    The database is the one hard dependency for taking payments; Redis or the relay being down
    delays delivery but loses nothing, which the body says.
    """
    checks: dict[str, dict[str, object]] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": str(exc)[:200]}
    try:
        redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        ).ping()
        checks["redis"] = {"ok": True}
    except Exception as exc:
        checks["redis"] = {"ok": False, "error": str(exc)[:200]}
    if checks["database"]["ok"]:
        beat = RelayHeartbeat.objects.order_by("-beat_at").first()
        age = (timezone.now() - beat.beat_at) if beat else None
        checks["relay"] = {
            "ok": age is not None and age < RELAY_STALE_AFTER,
            "last_beat_seconds_ago": round(age.total_seconds(), 1) if age is not None else None,
        }
    else:
        checks["relay"] = {"ok": False, "error": "database unavailable"}
    # A relay that cannot reach the database (its own settings, or the network) says so in Redis.
    unreachable = unreachable_relays() if checks["redis"]["ok"] else []
    if unreachable:
        checks["relay"].update(ok=False, cannot_connect=unreachable)
    healthy = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if healthy else "degraded", "checks": checks}, status=200 if healthy else 503)
