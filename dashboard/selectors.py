"""The student's dashboard read model: their purchases, each with its course, its trainer and its sessions.

It reads all three domain apps, so it sits above them (docs/architecture.md, the layers); what it builds
is cached per student in the read cache (outbox/readcache.py) with the seq it reflects, and only the
relay invalidates it.
"""

import json
from datetime import UTC
from typing import Any

from django.db import connection, transaction

from outbox import readcache
from outbox.selectors import student_last_seq
from purchases.models import Purchase, StudentProfile

DASHBOARD_VIEW = "dashboard"


def dashboard_build(*, student: Any) -> tuple[int, dict[str, Any]]:
    """The dashboard from the database, with the student's seq it reflects.

    Reads in one REPEATABLE READ snapshot so the seq and the rows agree exactly. Inside a caller's
    transaction it reads the seq first, so the rows are at least as new as the seq it reports (a view
    is never labelled newer than it is, which is what the read cache's fill guard relies on).
    """
    own_snapshot = not connection.in_atomic_block
    with transaction.atomic():
        if own_snapshot:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        seq = student_last_seq(student_id=student.pk)
        purchases = (
            Purchase.objects.filter(student=student)
            .select_related("course", "allocation__trainer")
            .prefetch_related("sessions")
            .order_by("-created_at", "-id")
        )
        rows = []
        for p in purchases:
            allocation = getattr(p, "allocation", None)
            trainer = allocation.trainer if allocation is not None and allocation.released_at is None else None
            rows.append(
                {
                    "id": p.pk,
                    "status": p.status,
                    "course": {"id": p.course.pk, "title": p.course.title},
                    "trainer": {"id": trainer.pk, "name": trainer.name} if trainer else None,
                    "sessions": [
                        {
                            "id": s.pk,
                            "starts_at": s.starts_at.astimezone(UTC).isoformat(),
                            "ends_at": s.ends_at.astimezone(UTC).isoformat(),
                            "status": s.status,
                        }
                        for s in p.sessions.all()
                    ],
                }
            )
        zone = StudentProfile.objects.filter(student_id=student.pk).values_list("timezone", flat=True).first()
    view = {
        "student": {
            "id": student.pk,
            "username": student.get_username(),
            "email": student.email,
            "timezone": zone or None,
        },
        "purchases": rows,
        "seq": seq,
    }
    return seq, view


def dashboard_json(*, student: Any) -> tuple[bytes, bool]:
    """The dashboard as JSON bytes, from the read cache when fresh; returns `(body, from_cache)`."""

    def build() -> tuple[int, bytes]:
        seq, view = dashboard_build(student=student)
        return seq, json.dumps(view, separators=(",", ":")).encode()

    _, body, from_cache = readcache.fetch(student_id=student.pk, view=DASHBOARD_VIEW, build=build)
    return body, from_cache
