"""Writers of training sessions: place a purchase's series, move one session, cancel the rest.

A trainer never has two scheduled sessions that overlap: PostgreSQL's exclusion constraint
`session_trainer_no_overlap` refuses it, whoever writes. These services read the trainer's calendar,
pick the earliest free place, and write it so that losing a race to a concurrent writer means
trying the next free place, not failing.
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from allocation.selectors import calendar_from_row, calendar_query, earliest_start, free_series, horizon_end, series_in
from allocation.services import allocation_waitlist
from kernel.rows import mark_loaded
from outbox.services import Cause
from purchases.events import purchase_event_emit
from purchases.models import Purchase
from purchases.services import purchase_lock_scheduled
from sessions_app.errors import NoFreeSlot, SessionNotFound, SessionNotReschedulable
from sessions_app.models import TrainingSession

logger = logging.getLogger(__name__)

# Each lost race means a concurrent writer committed sessions there; a bound keeps a bug from looping.
MAX_ATTEMPTS = 100

# Whether the purchase has sessions, its active allocation's trainer and proposed start, and that
# trainer's calendar in one read after the lock: three statements before (two of them ORM querysets).
# With a proposal still on time (not before `from`), the busy time read is only the weeks its series
# covers: for a trainer booked for months, that was the read's whole cost (1.2 ms against ~0.2).
_READ_SQL = """
SELECT EXISTS (SELECT FROM sessions_app_trainingsession s WHERE s.purchase_id = %(purchase)s),
       a.trainer_id, a.proposed_start, cal.*
FROM (SELECT) AS one
LEFT JOIN allocation_allocation a ON a.purchase_id = %(purchase)s AND a.released_at IS NULL
LEFT JOIN LATERAL ({calendar}) cal ON true
""".format(
    calendar=calendar_query(
        trainer="a.trainer_id",
        start="CASE WHEN a.proposed_start >= %(from)s THEN a.proposed_start ELSE %(from)s END",
        until="CASE WHEN a.proposed_start >= %(from)s"
        " THEN a.proposed_start + make_interval(weeks => %(count)s, days => 1) ELSE %(until)s END",
    )
)

_INSERT_SQL = """
INSERT INTO sessions_app_trainingsession (purchase_id, trainer_id, number, starts_at, ends_at, duration_minutes, status)
SELECT %(purchase)s, %(trainer)s, n, s, e, %(minutes)s, 'scheduled'
FROM unnest(%(numbers)s::int[], %(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS x(n, s, e)
ON CONFLICT DO NOTHING
RETURNING id, number
"""


def iso(value: datetime) -> str:
    """UTC ISO 8601 with its offset, as events and the API carry times."""
    return value.astimezone(UTC).isoformat()


def sessions_generate(*, purchase_id: int, cause: Cause) -> list[TrainingSession]:
    """Schedule the course's sessions weekly at one local time in the trainer's free availability,
    the first no earlier than the lead time; emit `sessions.generated`.

    A slot taken by a concurrent writer in the meantime (the insert skips rows the exclusion
    constraint refuses) moves this purchase to the next free series. If the trainer has no free
    series left, the purchase goes back to the waitlist (`allocation.waitlisted`, reason
    `no_free_slot`) and its place is freed. Idempotent: a purchase that already has sessions, or
    that is not active with a trainer, is left alone (returns its existing sessions).

    It tries the series allocation proposed (`Allocation.proposed_start`) first: if it is still free,
    in the trainer's availability and after the lead time, that is the series, and only the weeks it
    covers are read; otherwise the earliest free series from now (one more read).

    Four statements when it places the series (it was six): the purchase's lock, then (seeing what
    the lock's holder committed) its sessions, allocation and the trainer's calendar in one read, the
    insert and the event.
    """
    with transaction.atomic(savepoint=False):
        student_id, status, count, minutes = purchase_lock_scheduled(purchase_id=purchase_id, no_key=True)
        with connection.cursor() as cursor:
            # After the lock, so that it sees what the lock's holder committed.
            earliest, until = earliest_start(), horizon_end()
            cursor.execute(
                _READ_SQL,
                {
                    "purchase": purchase_id,
                    "from": earliest,
                    "until": until + timedelta(weeks=count, days=1),
                    "count": count,
                    "exclude": 0,
                },
            )
            has_sessions, trainer_id, proposed, *calendar = cursor.fetchone()
        if has_sessions or trainer_id is None or status != Purchase.Status.ACTIVE:
            return list(TrainingSession.objects.filter(purchase_id=purchase_id).order_by("number"))
        purchase = mark_loaded(Purchase(id=purchase_id, student_id=student_id, status=status))
        cal = calendar_from_row(calendar)
        if proposed is not None and proposed >= earliest:  # the read covered the proposal's weeks only
            series = series_in(cal, count=count, minutes=minutes, earliest=proposed, until=proposed) or free_series(
                trainer_id=trainer_id, count=count, minutes=minutes, earliest=earliest
            )
        else:
            series = series_in(cal, count=count, minutes=minutes, earliest=earliest, until=until)
        for _ in range(MAX_ATTEMPTS):
            if series is None:
                allocation_waitlist(purchase=purchase, reason="no_free_slot", cause=cause)
                return []
            sessions = _insert_series(purchase, trainer_id, series, minutes)
            if sessions is not None:
                break
            logger.info("purchase %s lost a race for slots of trainer %s: next free series", purchase.pk, trainer_id)
            series = free_series(trainer_id=trainer_id, count=count, minutes=minutes, earliest=earliest_start())
        else:
            raise RuntimeError(f"purchase {purchase.pk}: no series placed after {MAX_ATTEMPTS} attempts")
        purchase_event_emit(
            purchase=purchase,
            type="sessions.generated",
            payload={
                "trainer_id": trainer_id,
                "sessions": [_session_data(s) for s in sessions],
            },
            cause=cause,
        )
        return sessions


def _insert_series(
    purchase: Purchase, trainer_id: int, series: list[tuple[datetime, datetime]], minutes: int
) -> list[TrainingSession] | None:
    """Insert the series in one statement; None (and nothing kept) if a concurrent writer took part of it.

    `ON CONFLICT DO NOTHING` skips a row the exclusion constraint refuses, waiting first for the
    writer of a conflicting uncommitted row: no error, no savepoint, and the next calendar read sees
    what that writer committed.
    """
    numbers = list(range(1, len(series) + 1))
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_SQL,
            {
                "purchase": purchase.pk,
                "trainer": trainer_id,
                "minutes": minutes,
                "numbers": numbers,
                "starts": [s for s, _ in series],
                "ends": [e for _, e in series],
            },
        )
        ids = dict((number, pk) for pk, number in cursor.fetchall())
        if len(ids) < len(series):
            if ids:
                cursor.execute("DELETE FROM sessions_app_trainingsession WHERE id = ANY(%s)", [list(ids.values())])
            return None
    sessions = []
    for n, (start, end) in zip(numbers, series, strict=True):
        session = mark_loaded(
            TrainingSession(
                id=ids[n],
                purchase_id=purchase.pk,  # not the instance: `sessions_generate`'s holds only what it read
                trainer_id=trainer_id,
                number=n,
                starts_at=start,
                ends_at=end,
                duration_minutes=minutes,
            )
        )
        sessions.append(session)
    return sessions


def _session_data(s: TrainingSession) -> dict[str, Any]:
    return {
        "id": s.pk,
        "number": s.number,
        "starts_at": iso(s.starts_at),
        "ends_at": iso(s.ends_at),
        "status": s.status,
    }


def session_reschedule(
    *, session_id: int, actor: str, student_id: int | None = None, not_before: datetime | None = None
) -> TrainingSession:
    """Move a scheduled session to the trainer's next free slot after its current start (or after
    `not_before`, whichever is later, and never within the lead time); emit `session.rescheduled`.

    `student_id` restricts it to that student's sessions (`SessionNotFound` otherwise). Raises
    `SessionNotReschedulable` for a session that is not scheduled, has started, or whose purchase is
    not active, and `NoFreeSlot` when the trainer has no free slot within the horizon. Two moves
    racing for one slot: the loser takes the next one. The event joins the purchase's payment chain.
    """
    with transaction.atomic(durable=True):
        found = TrainingSession.objects.filter(id=session_id)
        if student_id is not None:
            found = found.filter(purchase__student_id=student_id)
        purchase_id = found.values_list("purchase_id", flat=True).first()
        if purchase_id is None:
            raise SessionNotFound(f"no session {session_id}", session_id=session_id)
        # Purchase first, as every writer of a purchase's rows does (refunds, generation).
        purchase = (
            Purchase.objects.select_for_update(no_key=True, of=("self",)).select_related("payment").get(id=purchase_id)
        )
        session = TrainingSession.objects.select_for_update().get(id=session_id)
        now = timezone.now()
        if (
            session.status != TrainingSession.Status.SCHEDULED
            or session.starts_at <= now
            or purchase.status != Purchase.Status.ACTIVE
        ):
            raise SessionNotReschedulable(
                f"session {session_id} is {session.status} (purchase {purchase.status}) and starts at "
                f"{iso(session.starts_at)}: only a scheduled, future session of an active purchase can move",
                session_id=session_id,
                status=session.status,
            )
        earliest = max(earliest_start(), session.starts_at + timedelta(seconds=1), not_before or now)
        previous = session.starts_at
        for _ in range(MAX_ATTEMPTS):
            slot = free_series(
                trainer_id=session.trainer_id,
                count=1,
                minutes=session.duration_minutes,
                earliest=earliest,
                exclude_session_id=session.pk,
            )
            if slot is None:
                raise NoFreeSlot(
                    f"the trainer has no free slot after {iso(earliest)} within the scheduling horizon",
                    session_id=session_id,
                    after=iso(earliest),
                )
            (session.starts_at, session.ends_at), *_ = slot
            try:
                with transaction.atomic():  # a savepoint: a lost race rolls back this UPDATE only
                    TrainingSession.objects.filter(id=session.pk).update(
                        starts_at=session.starts_at, ends_at=session.ends_at
                    )
                break
            except IntegrityError:  # a concurrent writer committed there first: read again, take the next one
                logger.info("session %s lost a race for %s: next free slot", session.pk, iso(session.starts_at))
        else:
            raise RuntimeError(f"session {session_id}: not moved after {MAX_ATTEMPTS} attempts")
        purchase_event_emit(
            purchase=purchase,
            type="session.rescheduled",
            payload={
                "trainer_id": session.trainer_id,
                "session": _session_data(session),
                "previous_starts_at": iso(previous),
            },
            cause=Cause(actor=actor, correlation_id=purchase.payment.provider_payment_id),
        )
        return session


def sessions_cancel(*, purchase_id: int, cause: Cause) -> list[TrainingSession]:
    """Cancel the purchase's sessions that have not started yet (their slots become free at once);
    emit `sessions.cancelled`.

    Idempotent: with nothing left to cancel it writes and emits nothing (returns []).
    """
    with transaction.atomic(savepoint=False):
        purchase = Purchase.objects.select_for_update().get(id=purchase_id)
        future = list(
            TrainingSession.objects.select_for_update().filter(
                purchase=purchase, status=TrainingSession.Status.SCHEDULED, starts_at__gt=timezone.now()
            )
        )
        if not future:
            return []
        TrainingSession.objects.filter(id__in=[s.pk for s in future]).update(status=TrainingSession.Status.CANCELLED)
        purchase_event_emit(
            purchase=purchase,
            type="sessions.cancelled",
            payload={"session_ids": [s.pk for s in future]},
            cause=cause,
        )
        for s in future:
            s.status = TrainingSession.Status.CANCELLED
        return future
