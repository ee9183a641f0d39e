"""Reads of the outbox."""

from django.db import connection

from outbox.models import OutboxEvent


def student_last_seq(*, student_id: int) -> int:
    """The student's last committed seq as seen by the caller's snapshot (0 before any event)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT last_seq FROM outbox_studentstream WHERE student_id = %s", [student_id])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def student_events_after(*, student_id: int, after: int, limit: int = 500) -> list[OutboxEvent]:
    """The student's events with seq > `after`, in seq order."""
    return list(OutboxEvent.objects.filter(student_id=student_id, seq__gt=after).order_by("seq")[:limit])
