"""Writers of training sessions."""

from datetime import UTC, datetime, time, timedelta

from django.db import transaction
from django.utils import timezone

from allocation.models import Allocation
from outbox import services as outbox
from outbox.services import Cause
from purchases.models import Purchase
from sessions_app.models import TrainingSession

SESSION_START = time(10, 0)


def sessions_generate(*, purchase_id: int, cause: Cause) -> list[TrainingSession]:
    """Schedule the course's sessions, weekly from the next day at 10:00 UTC; emit `sessions.generated`.

    Idempotent: a purchase that already has sessions, or that is not active with a trainer, is left
    alone (returns its existing sessions).
    """
    with transaction.atomic():
        # Lock the purchase only (not the joined course: every webhook's FK check takes KEY SHARE on it).
        purchase = (
            Purchase.objects.select_for_update(no_key=True, of=("self",)).select_related("course").get(id=purchase_id)
        )
        existing = list(TrainingSession.objects.filter(purchase=purchase).order_by("number"))
        allocation = Allocation.objects.filter(purchase=purchase, released_at__isnull=True).first()
        if existing or allocation is None or purchase.status != Purchase.Status.ACTIVE:
            return existing
        first_day = (timezone.now() + timedelta(days=1)).date()
        first = datetime.combine(first_day, SESSION_START, tzinfo=UTC)
        course = purchase.course
        sessions = TrainingSession.objects.bulk_create(
            [
                TrainingSession(
                    purchase=purchase,
                    trainer_id=allocation.trainer_id,
                    number=n + 1,
                    starts_at=first + timedelta(weeks=n),
                    duration_minutes=course.session_minutes,
                )
                for n in range(course.sessions_count)
            ]
        )
        outbox.emit(
            type="sessions.generated",
            student_id=purchase.student_id,
            aggregate_type="purchase",
            aggregate_id=purchase.pk,
            payload={
                "purchase_id": purchase.pk,
                "trainer_id": allocation.trainer_id,
                "sessions": [
                    {"id": s.pk, "number": s.number, "starts_at": s.starts_at.isoformat(), "status": s.status}
                    for s in sessions
                ],
            },
            cause=cause,
        )
        return sessions


def sessions_cancel(*, purchase_id: int, cause: Cause) -> list[TrainingSession]:
    """Cancel the purchase's sessions that have not started yet; emit `sessions.cancelled`.

    Idempotent: with nothing left to cancel it writes and emits nothing (returns []).
    """
    with transaction.atomic():
        purchase = Purchase.objects.select_for_update().get(id=purchase_id)
        future = list(
            TrainingSession.objects.select_for_update().filter(
                purchase=purchase, status=TrainingSession.Status.SCHEDULED, starts_at__gt=timezone.now()
            )
        )
        if not future:
            return []
        TrainingSession.objects.filter(id__in=[s.pk for s in future]).update(status=TrainingSession.Status.CANCELLED)
        outbox.emit(
            type="sessions.cancelled",
            student_id=purchase.student_id,
            aggregate_type="purchase",
            aggregate_id=purchase.pk,
            payload={"purchase_id": purchase.pk, "session_ids": [s.pk for s in future]},
            cause=cause,
        )
        for s in future:
            s.status = TrainingSession.Status.CANCELLED
        return future
