"""Liveness, readiness and health of the HTTP processes.

- `/livez`: the process answers (no dependency is asked): restart it only when this fails.
- `/readyz`: this process can do its job now, judged by what it needs: `web` (the webhook, the API,
  the admin) needs PostgreSQL only (the webhook touches nothing else, invariant 6 in docs/architecture.md); `ws` (the
  sockets) needs PostgreSQL and Redis (the channel layer). 503 takes it out of the load balancer.
- `/healthz`: readiness plus the whole delivery path in the body: Redis and the relay's heartbeat
  (`outbox status --check` alerts on them). A dead relay delays delivery but loses nothing, so it
  makes the body "degraded", never `web` unready.

The process kind comes from `COURSECHAIN_PROCESS`, which `config/wsgi.py` ("web") and `config/asgi.py`
("ws") set by default.
"""

import os

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from outbox.models import RELAY_ALIVE_WITHIN, RelayHeartbeat
from outbox.redis_client import fail_fast_client
from outbox.relay_status import unreachable_relays

NEEDS = {"web": ("database",), "ws": ("database", "redis")}

Check = dict[str, object]


def _database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:200]}


def _redis() -> Check:
    try:
        fail_fast_client(settings.REDIS_URL).ping()
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:200]}


def _relay() -> Check:
    try:
        beat = RelayHeartbeat.objects.order_by("-beat_at").first()
    except Exception:
        return {"ok": False, "error": "database unavailable"}
    age = (timezone.now() - beat.beat_at) if beat else None
    return {
        "ok": age is not None and age < RELAY_ALIVE_WITHIN,
        "last_beat_seconds_ago": round(age.total_seconds(), 1) if age is not None else None,
    }


def process_kind() -> str:
    kind = os.environ.get("COURSECHAIN_PROCESS", "web")
    return kind if kind in NEEDS else "web"


def livez_view(request: HttpRequest) -> JsonResponse:
    """200 whenever the process can answer at all."""
    return JsonResponse({"status": "ok", "process": process_kind()})


def readyz_view(request: HttpRequest) -> JsonResponse:
    """200 when what this process needs answers; 503 otherwise, naming what failed."""
    kind = process_kind()
    probes = {"database": _database, "redis": _redis}
    checks = {name: probes[name]() for name in NEEDS[kind]}
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "unready", "process": kind, "checks": checks}, status=200 if ready else 503
    )


def healthz_view(request: HttpRequest) -> JsonResponse:
    """Readiness as the status code; every part of the delivery path in the body ("ok" or "degraded")."""
    kind = process_kind()
    checks = {"database": _database(), "redis": _redis(), "relay": _relay()}
    # A relay that cannot reach the database (its own settings, or the network) says so in Redis.
    unreachable = unreachable_relays() if checks["redis"]["ok"] else []
    if unreachable:
        checks["relay"].update(ok=False, cannot_connect=unreachable)
    ready = all(checks[name]["ok"] for name in NEEDS[kind])
    healthy = all(check["ok"] for check in checks.values())
    body = {"status": "ok" if healthy else "degraded", "process": kind, "ready": ready, "checks": checks}
    return JsonResponse(body, status=200 if ready else 503)
