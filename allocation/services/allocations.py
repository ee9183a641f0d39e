"""Writers of allocations: choose a trainer for a purchase, waitlist it, release it, promote the waitlist."""

from datetime import datetime
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from allocation.models import Allocation, Trainer
from allocation.scheduling import Calendar
from allocation.selectors import calendar_from_row, calendar_query, earliest_start, free_series, horizon_end, series_in
from kernel.rows import mark_loaded
from outbox.services import Cause
from purchases.events import purchase_event_emit
from purchases.models import Purchase
from purchases.services import ScheduledPurchase, purchase_lock_scheduled


def trainer_allocate(*, purchase_id: int, cause: Cause) -> Allocation | None:
    """Allocate the least-loaded trainer with free capacity and a free series of slots for the
    course to a pending or waitlisted purchase.

    Emits `trainer.allocated`; a pending purchase that fits nowhere is waitlisted instead
    (`allocation.waitlisted`, with the reason: `no_capacity` when every trainer is full,
    `no_free_slot` when those with places have no free series); a waitlisted one stays so, with no
    new event. Idempotent: an active or refunded purchase is left alone (returns its allocation).

    Capacity can't be exceeded and concurrent allocations can't deadlock: the place is taken by a
    conditional `UPDATE ... WHERE active_count < capacity` on one trainer row at a time (re-checked
    under that row's lock), so a transaction never holds one trainer while waiting for another. A
    CHECK constraint backs it. The slots are only looked at here; `sessions_generate` takes them.
    Composable: under the handler runner's transaction (or a promotion's) it takes no savepoint.

    Three statements when a place is found and the purchase is not locked by another writer: the
    purchase's lock with everything read to choose a trainer, the place with the allocation and the
    purchase's status, and the event.
    """
    with transaction.atomic(savepoint=False):
        (student_id, status, count, minutes), opening = _open(purchase_id)
        if status not in (Purchase.Status.PENDING, Purchase.Status.WAITLISTED):
            return Allocation.objects.filter(purchase_id=purchase_id, released_at__isnull=True).first()
        purchase = mark_loaded(Purchase(id=purchase_id, student_id=student_id, status=status))
        course = _Course(count, minutes)
        taken, reason = _take_a_place(purchase, course, opening)
        if taken is None and status == Purchase.Status.PENDING:
            # Before waitlisting, serialise with refunds: either a refund that frees a place commits
            # first (and the second look sees it), or it waits until this purchase is on the waitlist
            # that its promotion handler will read. Without this, a place freed in between was lost.
            _lock_waitlist()
            taken, reason = _take_a_place(purchase, course, None)
            if taken is None:
                _waitlist(purchase, cause, reason)
                return None
        if taken is None:
            return None
        allocation, trainer_name = taken
        purchase_event_emit(
            purchase=purchase,
            type="trainer.allocated",
            payload={
                "allocation_id": allocation.pk,
                "status": Purchase.Status.ACTIVE,
                "trainer": {"id": allocation.trainer_id, "name": trainer_name},
            },
            cause=cause,
        )
        return allocation


# The purchase (locked), its course, the trainers with a free place (least loaded first) and the first
# one's calendar in one round trip: it was four statements, three of them ORM querysets to compile.
# The trainers and the calendar are read in the statement's snapshot, taken before the lock: so the
# lock is taken only if it is free (SKIP LOCKED). Had the statement waited for it, a place freed by a
# refund committed meanwhile would be missing from that snapshot, and a waitlisted purchase being
# promoted would be passed over (the pending path reads again under the waitlist lock, but a
# promotion does not). A locked purchase returns no row: then `purchase_lock_scheduled` waits for the
# lock, and the
# trainers are read afresh after it. A place is re-checked under the trainer's row lock when taken
# either way, and a lost race reads again.
_OPEN_SQL = """
WITH p AS (
    SELECT p.student_id, p.status, c.sessions_count, c.session_minutes
    FROM purchases_purchase p JOIN purchases_course c ON c.id = p.course_id
    WHERE p.id = %(purchase)s
    FOR UPDATE OF p SKIP LOCKED
), candidates AS (
    SELECT array_agg(t.id ORDER BY t.active_count, t.id) AS ids FROM allocation_trainer t
    WHERE t.active_count < t.capacity AND EXISTS (SELECT FROM p WHERE p.status IN ('pending', 'waitlisted'))
)
SELECT p.student_id, p.status, p.sessions_count, p.session_minutes, candidates.ids, cal.*
FROM p CROSS JOIN candidates LEFT JOIN LATERAL ({calendar}) cal ON true
""".format(
    calendar=calendar_query(
        trainer="candidates.ids[1]",
        until="%(horizon_end)s::timestamptz + make_interval(weeks => p.sessions_count, days => 1)",
    )
)

# Take a place of the trainer, upsert the purchase's allocation (a purchase put back on the waitlist,
# its last free slots gone to a concurrent purchase, has a released row to reuse) and make the purchase
# active, in one round trip: three statements before. The allocation and the purchase change only if
# the place was taken (`taken` is empty when the trainer filled up meanwhile: nothing is written).
_TAKE_SQL = """
WITH taken AS (
    UPDATE allocation_trainer SET active_count = active_count + 1
    WHERE id = %(trainer)s AND active_count < capacity
    RETURNING id, name
), allocation AS (
    INSERT INTO allocation_allocation (purchase_id, trainer_id, allocated_at, released_at, proposed_start)
    SELECT %(purchase)s, taken.id, %(now)s, NULL, %(proposed)s FROM taken
    ON CONFLICT (purchase_id) DO UPDATE
    SET trainer_id = excluded.trainer_id, allocated_at = excluded.allocated_at, released_at = NULL,
        proposed_start = excluded.proposed_start
    RETURNING id
), activated AS (
    UPDATE purchases_purchase SET status = 'active', updated_at = %(now)s
    WHERE id = %(purchase)s AND EXISTS (SELECT FROM taken)
)
SELECT allocation.id, taken.name FROM taken CROSS JOIN allocation
"""

_CANDIDATES_SQL = "SELECT id FROM allocation_trainer WHERE active_count < capacity ORDER BY active_count, id"


class _Course(NamedTuple):
    sessions_count: int
    session_minutes: int


class _Round(NamedTuple):
    """Candidates already read, with the first one's calendar read in the same snapshot."""

    candidates: list[int]
    first_calendar: Calendar | None
    earliest: datetime
    until: datetime


def _open(purchase_id: int) -> tuple[ScheduledPurchase, _Round | None]:
    """Lock the purchase; return its student, status and course's sessions count and minutes, and the
    first round of candidates (None when the lock had to be waited for: they are read afresh then)."""
    earliest, until = earliest_start(), horizon_end()
    with connection.cursor() as cursor:
        cursor.execute(_OPEN_SQL, {"purchase": purchase_id, "from": earliest, "horizon_end": until, "exclude": 0})
        row = cursor.fetchone()
        if row is not None:
            student_id, status, count, minutes, candidates, *calendar = row
            first_calendar = calendar_from_row(calendar) if candidates else None
            locked = ScheduledPurchase(student_id, status, count, minutes)
            return locked, _Round(candidates or [], first_calendar, earliest, until)
    # Locked by a concurrent writer (a promotion, a refund), or no such purchase.
    return purchase_lock_scheduled(purchase_id=purchase_id, no_key=False), None


NO_CAPACITY = "no_capacity"
NO_FREE_SLOT = "no_free_slot"


def _take_a_place(
    purchase: Purchase, course: _Course, opening: _Round | None
) -> tuple[tuple[Allocation, str] | None, str]:
    """Take a place of the least-loaded trainer with a place and a free series for `course` and make
    `purchase` active on it: `((allocation, trainer name), "")`, or `(None, reason)` when there is none.

    Candidates come from a fresh snapshot each round (the first round's from `opening` when given);
    one without a free series is skipped (one calendar read each, before its row is touched); a lost
    race (the trainer filled up meanwhile) moves on to the next one, and a round where every candidate
    was lost reads again, so a place that exists is never missed.
    """
    no_slot: set[int] = set()
    while True:
        if opening is None:
            with connection.cursor() as cursor:
                cursor.execute(_CANDIDATES_SQL)
                candidates = [pk for (pk,) in cursor.fetchall() if pk not in no_slot]
            first_calendar = None
        else:
            candidates, first_calendar = opening.candidates, opening.first_calendar
        if not candidates:
            return None, NO_FREE_SLOT if no_slot else NO_CAPACITY
        for trainer_id in candidates:
            if first_calendar is not None and opening is not None and trainer_id == candidates[0]:
                series = series_in(
                    first_calendar,
                    count=course.sessions_count,
                    minutes=course.session_minutes,
                    earliest=opening.earliest,
                    until=opening.until,
                )
            else:
                series = free_series(
                    trainer_id=trainer_id,
                    count=course.sessions_count,
                    minutes=course.session_minutes,
                    earliest=earliest_start(),
                )
            if series is None:
                no_slot.add(trainer_id)
                continue
            now = timezone.now()
            with connection.cursor() as cursor:
                proposed = series[0][0]
                cursor.execute(
                    _TAKE_SQL, {"trainer": trainer_id, "purchase": purchase.pk, "now": now, "proposed": proposed}
                )
                row = cursor.fetchone()
            if row is not None:
                allocation = mark_loaded(
                    Allocation(
                        id=row[0],
                        purchase_id=purchase.pk,
                        trainer_id=trainer_id,
                        allocated_at=now,
                        released_at=None,
                        proposed_start=proposed,
                    )
                )
                purchase.status, purchase.updated_at = Purchase.Status.ACTIVE, now
                return (allocation, row[1]), ""
        opening = None


WAITLIST_LOCK = 7_240_001  # pg_advisory_xact_lock key: "the waitlist and freed places"


def _lock_waitlist() -> None:
    """Held to COMMIT; taken only on the rare paths (waitlisting, releasing), never per allocation."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [WAITLIST_LOCK])


def _waitlist(purchase: Purchase, cause: Cause, reason: str) -> None:
    purchase.status = Purchase.Status.WAITLISTED
    purchase.save(update_fields=["status", "updated_at"])
    purchase_event_emit(
        purchase=purchase,
        type="allocation.waitlisted",
        payload={"status": purchase.status, "reason": reason},
        cause=cause,
    )


def allocation_waitlist(*, purchase: Purchase, reason: str, cause: Cause) -> None:
    """Put an active purchase back on the waitlist: release its trainer's place, emit
    `allocation.waitlisted` with `reason`. For the sessions service when the trainer's last free
    series was taken between allocation and scheduling. Needs the caller's transaction."""
    allocation_release(purchase=purchase)
    _waitlist(purchase, cause, reason)


def allocation_release(*, purchase: Purchase) -> Allocation | None:
    """Release the purchase's allocation and give its trainer the capacity back.

    Part of a larger change: needs the caller's transaction, and the caller emits the event that
    covers the purchase (e.g. `purchase.refunded`). Idempotent: returns None if nothing was active.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("allocation_release() runs inside the caller's transaction.atomic()")
    _lock_waitlist()
    allocation = Allocation.objects.select_for_update().filter(purchase=purchase, released_at__isnull=True).first()
    if allocation is None:
        return None
    allocation.released_at = timezone.now()
    allocation.save(update_fields=["released_at"])
    Trainer.objects.filter(id=allocation.trainer_id).update(active_count=F("active_count") - 1)
    return allocation


def waitlist_promote(*, cause: Cause, limit: int = 100, scan: int = 200) -> list[Allocation]:
    """Allocate up to `limit` waitlisted purchases, oldest first, while any trainer has free
    capacity (and slots for the purchase's course), looking at no more than `scan` of them.

    Runs in the caller's transaction (the handler's): each allocation is `trainer_allocate`'s, under
    the purchase's and the trainer's row locks, so a concurrent promotion can't allocate the same
    purchase twice and capacity is never exceeded. Idempotent. Each new
    allocation belongs to its own payment's chain (correlation) and names `cause` as its cause.
    """
    allocated: list[Allocation] = []
    waiting = Purchase.objects.filter(status=Purchase.Status.WAITLISTED).order_by("created_at", "id")
    # A purchase whose course fits no free slot stays waiting and the next one gets its turn, up to
    # `scan` purchases looked at: a freed place and freed slots go to the oldest purchase they fit.
    for purchase_id, payment_id in waiting.values_list("id", "payment__provider_payment_id")[:scan]:
        if len(allocated) >= limit or not Trainer.objects.filter(active_count__lt=F("capacity")).exists():
            break
        allocation = trainer_allocate(
            purchase_id=purchase_id,
            cause=Cause(actor=cause.actor, correlation_id=payment_id, causation_id=cause.causation_id),
        )
        if allocation is not None:
            allocated.append(allocation)
    return allocated
