"""Writers of purchases, students' profiles and tokens, and courses. The webhook, the admin and the
commands come through here (the webhook, refunds and moves by way of `flows`)."""

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from kernel.rows import mark_loaded
from kernel.timezones import UnknownTimezone, zone
from outbox import services as outbox
from outbox.models import OutboxEvent
from outbox.services import Cause
from purchases.errors import InvalidTimezone, NotAStudent, UnknownCourse, UnknownPayment, UnknownStudent
from purchases.events import purchase_event_emit
from purchases.models import Course, Payment, Purchase, StudentProfile
from purchases.selectors import PaymentLookup, payment_lookup


@dataclass(frozen=True)
class PurchaseResult:
    purchase: Purchase
    created: bool


def purchase_create(
    *,
    payment_id: str,
    student_id: int,
    course_id: int,
    amount: Decimal,
    currency: str,
    actor: str,
    correlation_id: str | None = None,
    lookup: PaymentLookup | None = None,
) -> PurchaseResult:
    """Turn a successful payment into a purchase and emit `purchase.created`.

    Idempotent by `payment_id`, also under concurrency: every call for the same payment returns the
    same purchase, and only the first one writes anything or emits. The event's correlation id is
    the payment id unless `correlation_id` names the chain it continues (a move); `actor` says who
    asked (webhook, admin user, command). `lookup` is what `payment_lookup` read for these ids in the
    caller's transaction, if it has read it already (the webhook reads it with its provider event).
    Raises `UnknownStudent` / `NotAStudent` / `UnknownCourse` before writing anything. Composable: in
    a caller's transaction (the webhook's, a move's) it is part of it, without a savepoint.
    """
    with transaction.atomic(savepoint=False):
        if lookup is None:
            lookup = payment_lookup(payment_id=payment_id, student_id=student_id, course_id=course_id)
        if lookup.purchase is not None:
            return PurchaseResult(purchase=lookup.purchase, created=False)
        if not lookup.student_active:
            raise UnknownStudent(f"no active student with id {student_id}", student_id=student_id)
        if lookup.student_operator:
            raise NotAStudent(
                f"user {student_id} is staff or a superuser, not a student: only students can hold purchases",
                student_id=student_id,
            )
        if lookup.course_title is None:
            raise UnknownCourse(f"no course with id {course_id}", course_id=course_id)
        purchase = _purchase_insert(
            payment_id=payment_id, student_id=student_id, course_id=course_id, amount=amount, currency=currency.upper()
        )
        if purchase is None:
            return PurchaseResult(purchase=Purchase.objects.get(payment__provider_payment_id=payment_id), created=False)
        purchase_event_emit(
            purchase=purchase,
            type="purchase.created",
            payload={
                "payment_id": payment_id,
                "status": purchase.status,
                "course": {"id": course_id, "title": lookup.course_title},
                "amount": str(purchase.payment.amount),
                "currency": purchase.payment.currency,
            },
            cause=Cause(actor=actor, correlation_id=correlation_id or payment_id),
        )
        return PurchaseResult(purchase=purchase, created=True)


# The payment and its purchase in one round trip (it was two, the purchase an ORM create()).
# `ON CONFLICT DO NOTHING`: a concurrent call for the same payment blocks on the unique index until
# the first one commits, and then inserts nothing (no payment, so no purchase either): exactly one
# purchase results, with no error and no savepoint (`get_or_create` would take four round trips).
_PURCHASE_INSERT_SQL = f"""
WITH payment AS (
    INSERT INTO {Payment._meta.db_table} (provider_payment_id, amount, currency, received_at)
    VALUES (%(payment_id)s, %(amount)s, %(currency)s, %(now)s)
    ON CONFLICT (provider_payment_id) DO NOTHING
    RETURNING id
)
INSERT INTO {Purchase._meta.db_table} (payment_id, student_id, course_id, status, created_at, updated_at)
SELECT id, %(student_id)s, %(course_id)s, %(status)s, %(now)s, %(now)s FROM payment
RETURNING id, payment_id
"""


def _purchase_insert(
    *, payment_id: str, student_id: int, course_id: int, amount: Decimal, currency: str
) -> Purchase | None:
    """Insert the payment and its pending purchase (its payment loaded), or return None if a payment
    with this provider id exists. Needs the caller's transaction."""
    now = timezone.now()
    status = Purchase.Status.PENDING
    with connection.cursor() as cursor:
        cursor.execute(
            _PURCHASE_INSERT_SQL,
            {
                "payment_id": payment_id,
                "amount": amount,
                "currency": currency,
                "now": now,
                "student_id": student_id,
                "course_id": course_id,
                "status": status.value,
            },
        )
        row = cursor.fetchone()
    if row is None:
        return None
    purchase_pk, payment_pk = row
    payment = Payment(id=payment_pk, provider_payment_id=payment_id, amount=amount, currency=currency, received_at=now)
    purchase = Purchase(
        id=purchase_pk,
        payment=payment,
        student_id=student_id,
        course_id=course_id,
        status=status,
        created_at=now,
        updated_at=now,
    )
    mark_loaded(payment)
    return mark_loaded(purchase)


def purchase_lock(*, payment_id: str) -> Purchase:
    """The purchase of `payment_id`, row-locked (with its payment) to the caller's COMMIT: the refund
    flow's first step. Raises `UnknownPayment`. Needs the caller's transaction."""
    purchase = (
        Purchase.objects.select_for_update(no_key=True, of=("self",))
        .select_related("payment")
        .filter(payment__provider_payment_id=payment_id)
        .first()
    )
    if purchase is None:
        raise UnknownPayment(f"no purchase for payment {payment_id!r}", payment_id=payment_id)
    return purchase


class ScheduledPurchase(NamedTuple):
    """What the handlers' services need of a purchase they lock: whose it is, its status, and its
    course's sessions count and length."""

    student_id: int
    status: str
    sessions_count: int
    session_minutes: int


# Raw SQL, not a select_for_update queryset: the handlers run it for every purchase, and the queryset's
# compile (and two model instances) cost more than the round trip. Only the purchase's row is locked,
# not the course's (every webhook's foreign-key check takes KEY SHARE on the course).
_SCHEDULED_PURCHASE_SQL = """
SELECT p.student_id, p.status, c.sessions_count, c.session_minutes
FROM purchases_purchase p JOIN purchases_course c ON c.id = p.course_id
WHERE p.id = %s
FOR {strength} OF p
"""


def purchase_lock_scheduled(*, purchase_id: int, no_key: bool) -> ScheduledPurchase:
    """The purchase row-locked to the caller's COMMIT (`FOR NO KEY UPDATE` with `no_key`, else `FOR
    UPDATE`), waiting for a concurrent holder, with its course's sessions count and length. Raises
    `Purchase.DoesNotExist`. Needs the caller's transaction."""
    with connection.cursor() as cursor:
        cursor.execute(_SCHEDULED_PURCHASE_SQL.format(strength="NO KEY UPDATE" if no_key else "UPDATE"), [purchase_id])
        row = cursor.fetchone()
    if row is None:
        raise Purchase.DoesNotExist(f"no purchase with id {purchase_id}")
    return ScheduledPurchase(*row)


def purchase_refund_record(*, purchase: Purchase, released_trainer_id: int | None, actor: str) -> OutboxEvent:
    """Mark the locked, not yet refunded `purchase` refunded (and its payment), emit `purchase.refunded`
    and return it. The refund flow's purchase step (`flows.refunds`): needs its transaction."""
    previous = purchase.status
    purchase.status = Purchase.Status.REFUNDED
    purchase.save(update_fields=["status", "updated_at"])
    Payment.objects.filter(pk=purchase.payment_id).update(refunded_at=timezone.now())
    payment_id = purchase.payment.provider_payment_id
    return purchase_event_emit(
        purchase=purchase,
        type="purchase.refunded",
        payload={
            "payment_id": payment_id,
            "status": purchase.status,
            "previous_status": previous,
            "released_trainer_id": released_trainer_id,
        },
        cause=Cause(actor=actor, correlation_id=payment_id),
    )


def student_resync_request(*, student_id: int, actor: str) -> OutboxEvent:
    """Emit `student.resync_requested` and return it: through the relay, the student's cached views
    are invalidated and their app is told to refetch. Safe to repeat (one more harmless event each)."""
    if not get_user_model().objects.filter(id=student_id).exists():
        raise UnknownStudent(f"no student with id {student_id}", student_id=student_id)
    with transaction.atomic(savepoint=False):
        return outbox.emit(
            type="student.resync_requested",
            student_id=student_id,
            aggregate_type="student",
            aggregate_id=student_id,
            payload={"student_id": student_id},
            cause=Cause(actor=actor, correlation_id=f"resync:{student_id}:{uuid.uuid4().hex[:12]}"),
        )


def student_profile_update(*, student_id: int, timezone_name: str | None, actor: str) -> StudentProfile:
    """Set the student's time zone (an IANA name; None or "" clears it: the app then uses the
    device's zone). A change emits `student.resync_requested`, so the cached dashboard, which carries
    the zone, is refreshed and the student's open apps refetch. Raises `InvalidTimezone`."""
    name = timezone_name or ""
    if name:
        try:
            zone(name)
        except UnknownTimezone as exc:
            raise InvalidTimezone(str(exc), timezone=name) from exc
    with transaction.atomic(durable=True):
        profile, _ = StudentProfile.objects.select_for_update().get_or_create(student_id=student_id)
        if profile.timezone != name:
            profile.timezone = name
            profile.save(update_fields=["timezone"])
            student_resync_request(student_id=student_id, actor=actor)
        return profile


TOKEN_REVOKED = "student.token_revoked"  # noqa: S105 (an event type, not a secret)


@dataclass(frozen=True)
class TokenRotation:
    student_id: int
    token: str  # the new key; the only place it is ever returned


def student_token_revoke(*, student_id: int, actor: str) -> TokenRotation:
    """Rotate the student's API token: the old key stops authenticating at COMMIT (the REST API answers
    401 at once), a new key is returned, and `student.token_revoked` is emitted in the same transaction.

    Through the relay, the event closes every socket opened with the old key, on every `ws` process,
    with 4401; sockets opened with the new key receive it like any event (its payload holds only the
    student id, never a key). Raises `UnknownStudent`. Each call rotates again.
    """
    with transaction.atomic(durable=True):
        # Row-lock the student so two concurrent rotations serialise and the last one's key wins.
        student = get_user_model().objects.select_for_update().filter(id=student_id).first()
        if student is None:
            raise UnknownStudent(f"no student with id {student_id}", student_id=student_id)
        Token.objects.filter(user=student).delete()
        token = Token.objects.create(user=student)
        outbox.emit(
            type=TOKEN_REVOKED,
            student_id=student_id,
            aggregate_type="student",
            aggregate_id=student_id,
            payload={"student_id": student_id},
            cause=Cause(actor=actor, correlation_id=f"revoke:{student_id}:{uuid.uuid4().hex[:12]}"),
        )
        return TokenRotation(student_id=student_id, token=token.key)


def course_save(*, course_id: int | None, fields: dict[str, Any], actor: str) -> Course:
    """Create or edit a course (reference data: no event of its own). A new title asks every student
    who bought the course to resync (`student.resync_requested`), so no cached dashboard keeps the old
    one. `fields` are Course's editable fields, already validated."""
    with transaction.atomic(savepoint=False):
        if course_id is None:
            return Course.objects.create(**fields)
        course = Course.objects.select_for_update(no_key=True).get(id=course_id)  # webhooks keep inserting
        renamed = "title" in fields and fields["title"] != course.title
        Course.objects.filter(id=course_id).update(**fields)
        if renamed:
            students = Purchase.objects.filter(course_id=course_id).values_list("student_id", flat=True)
            for student_id in sorted(set(students)):
                student_resync_request(student_id=student_id, actor=actor)
        course.refresh_from_db()
        return course
