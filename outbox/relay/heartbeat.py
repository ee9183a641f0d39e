"""The relay's heartbeat: one row per running relay, and the retention of the rows of gone ones."""

from datetime import datetime, timedelta

from django.utils import timezone

from outbox.models import RelayHeartbeat

HEARTBEAT_SECONDS = 2.0
HEARTBEAT_RETENTION = timedelta(days=1)


def beat(*, relay_id: str, started_at: datetime, claimed_total: int) -> None:
    """Record that `relay_id` is alive (read by /healthz, /metrics, `outbox status` and `trace`), and
    forget the relays silent for HEARTBEAT_RETENTION: relays come and go with their pids."""
    now = timezone.now()
    RelayHeartbeat.objects.update_or_create(
        relay_id=relay_id, defaults={"started_at": started_at, "beat_at": now, "claimed_total": claimed_total}
    )
    RelayHeartbeat.objects.filter(beat_at__lt=now - HEARTBEAT_RETENTION).delete()
