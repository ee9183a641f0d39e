"""Writers of purchases. The webhook, the admin and `fix_purchase` all come through here."""

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from outbox import services as outbox
from outbox.models import OutboxEvent
from outbox.services import Cause
from purchases.errors import (
    EventConflict,
    MoveToSameCourse,
    NotAStudent,
    NotMovable,
    UnknownCourse,
    UnknownPayment,
    UnknownStudent,
)
from purchases.models import Course, Payment, ProviderEvent, Purchase, StudentProfile
from purchases.provider_body import storable


@dataclass(frozen=True)
class PurchaseResult:
    purchase: Purchase
    created: bool


@dataclass(frozen=True)
class ProviderEventResult:
    """`outcome` is the event's recorded outcome: `applied` and `ignored` succeeded; `conflict` (the
    payment id is recorded with other terms) and `mismatch` (a refund for another student or course)
    changed nothing. `problem` says what differed; `purchase` is the payment's purchase, if any."""

    purchase: Purchase | None
    outcome: str
    problem: dict[str, Any]

    @property
    def ignored(self) -> bool:
        return self.outcome == ProviderEvent.Outcome.IGNORED


PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_REFUNDED = "payment.refunded"
HANDLED_PROVIDER_EVENTS = (PAYMENT_SUCCEEDED, PAYMENT_REFUNDED)


def provider_event_receive(
    *, event_id: str, type: str, data: dict[str, Any], payload: dict[str, Any], raw_body: bytes
) -> ProviderEventResult:
    """Apply one verified payment-provider event, exactly once, and record it with its exact bytes.

    `payment.succeeded` creates the purchase, `payment.refunded` refunds it; any other type is
    recorded as ignored. Idempotent by provider event id (the same id with other bytes raises
    `EventConflict`, and nothing is written), and by payment id across different events of the same
    payment, also under concurrency (the unique indexes serialise the racers; no deadlock, since
    every caller locks the payment before the event record). A payment id already recorded with
    another student, course, amount or currency is recorded as a `conflict` and changes nothing; a
    refund whose student or course differs from the purchase's is recorded as a `mismatch` and
    refunds nothing. For handled types, `data` must have been validated (payment_id, student_id,
    course_id, amount, currency). `payload` is the body as jsonb can store it (`provider_body.storable`).
    """
    with transaction.atomic():
        seen = ProviderEvent.objects.filter(provider_event_id=event_id).first()
        if seen is not None:
            return _replayed(seen, raw_body=raw_body, payload=payload)
        purchase, outcome, problem = None, ProviderEvent.Outcome.IGNORED, {}
        if type == PAYMENT_SUCCEEDED:
            result = purchase_create(
                payment_id=data["payment_id"],
                student_id=data["student_id"],
                course_id=data["course_id"],
                amount=data["amount"],
                currency=data["currency"],
                actor="webhook",
            )
            purchase, outcome = result.purchase, ProviderEvent.Outcome.APPLIED
            if not result.created:
                problem = _differences(purchase, data, ("student", "course", "amount", "currency"))
        elif type == PAYMENT_REFUNDED:
            purchase = _purchase_of(data["payment_id"])
            problem = _differences(purchase, data, ("student", "course")) if purchase else {}
            if not problem:
                # The money goes back for whichever course the payment holds now: after an operator's move
                # that is the moved purchase, not the refunded original.
                held = _held_purchase_of(purchase) if purchase is not None else None
                refunded_id = held.payment.provider_payment_id if held is not None else data["payment_id"]
                refunded = purchase_refund(payment_id=refunded_id, actor="webhook")
                purchase, outcome = refunded.purchase, ProviderEvent.Outcome.APPLIED
        if problem:
            outcome = ProviderEvent.Outcome.CONFLICT if type == PAYMENT_SUCCEEDED else ProviderEvent.Outcome.MISMATCH
        # The validated (trimmed) payment id for handled types, so the record finds its payment again.
        payment_id = data.get("payment_id", "") if isinstance(data, dict) else ""
        record = ProviderEvent(
            provider_event_id=event_id,
            type=type,
            payment_id=storable(str(payment_id))[:128],
            outcome=outcome,
            payload=payload,
            raw_body=raw_body,
            problem=problem,
        )
        # A concurrent call for the same event id may have recorded it first (we waited for it on the
        # unique index): then ours is a replay of it, or a conflict that must leave nothing behind.
        ProviderEvent.objects.bulk_create([record], ignore_conflicts=True)
        if not ProviderEvent.objects.filter(provider_event_id=event_id, raw_body=raw_body).exists():
            raise EventConflict(f"event {event_id!r} is recorded with another body", event_id=event_id)
        return ProviderEventResult(purchase=purchase, outcome=outcome, problem=problem)


def _replayed(seen: ProviderEvent, *, raw_body: bytes, payload: dict[str, Any]) -> ProviderEventResult:
    """The answer to a retry of a recorded event: its recorded outcome, if the body is the same."""
    same = bytes(seen.raw_body) == raw_body if seen.raw_body is not None else seen.payload == payload
    if not same:
        event_id = seen.provider_event_id
        raise EventConflict(f"event {event_id!r} is recorded with another body", event_id=event_id)
    purchase = _purchase_of(seen.payment_id)
    if purchase is not None and seen.type == PAYMENT_REFUNDED and seen.outcome == ProviderEvent.Outcome.APPLIED:
        purchase = _held_purchase_of(purchase)
    return ProviderEventResult(purchase=purchase, outcome=seen.outcome, problem=seen.problem)


def _purchase_of(payment_id: str) -> Purchase | None:
    return Purchase.objects.select_related("payment").filter(payment__provider_payment_id=payment_id).first()


def _held_purchase_of(purchase: Purchase) -> Purchase:
    """The purchase the payment holds now: `purchase`, or, once an operator moved it (a refunded original),
    the latest purchase of its moves (moves of moves included)."""
    if purchase.status != Purchase.Status.REFUNDED:
        return purchase
    prefix = purchase.payment.provider_payment_id + MOVED_SEPARATOR
    moved = (
        Purchase.objects.select_related("payment")
        .filter(payment__provider_payment_id__startswith=prefix, student_id=purchase.student_id)
        .order_by("-id")
        .first()
    )
    return moved or purchase


def _differences(purchase: Purchase, data: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """Which of `fields` the recorded purchase has with other values than `data`."""
    recorded = {
        "student": purchase.student_id,
        "course": purchase.course_id,
        "amount": purchase.payment.amount,
        "currency": purchase.payment.currency,
    }
    sent = {
        "student": data["student_id"],
        "course": data["course_id"],
        "amount": data["amount"],
        "currency": data["currency"].upper(),
    }
    return {f: {"recorded": _plain(recorded[f]), "sent": _plain(sent[f])} for f in fields if recorded[f] != sent[f]}


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def purchase_create(
    *,
    payment_id: str,
    student_id: int,
    course_id: int,
    amount: Decimal,
    currency: str,
    actor: str,
    correlation_id: str | None = None,
) -> PurchaseResult:
    """Turn a successful payment into a purchase and emit `purchase.created`.

    Idempotent by `payment_id`, also under concurrency: every call for the same payment returns the
    same purchase, and only the first one writes anything or emits. The event's correlation id is
    the payment id unless `correlation_id` names the chain it continues (a move); `actor` says who
    asked (webhook, admin user, command).
    Raises `UnknownStudent` / `NotAStudent` / `UnknownCourse` before writing anything.
    """
    with transaction.atomic():
        existing = Purchase.objects.filter(payment__provider_payment_id=payment_id).first()
        if existing is not None:
            return PurchaseResult(purchase=existing, created=False)
        student = get_user_model().objects.filter(id=student_id, is_active=True).first()
        if student is None:
            raise UnknownStudent(f"no active student with id {student_id}", student_id=student_id)
        if student.is_staff or student.is_superuser:
            raise NotAStudent(
                f"user {student_id} is staff or a superuser, not a student: only students can hold purchases",
                student_id=student_id,
            )
        course = Course.objects.filter(id=course_id).first()
        if course is None:
            raise UnknownCourse(f"no course with id {course_id}", course_id=course_id)
        payment = _payment_insert(payment_id=payment_id, amount=amount, currency=currency.upper())
        if payment is None:
            return PurchaseResult(purchase=Purchase.objects.get(payment__provider_payment_id=payment_id), created=False)
        purchase = Purchase.objects.create(payment=payment, student=student, course=course)
        outbox.emit(
            type="purchase.created",
            student_id=student.pk,
            aggregate_type="purchase",
            aggregate_id=purchase.pk,
            payload={
                "purchase_id": purchase.pk,
                "payment_id": payment_id,
                "status": purchase.status,
                "course": {"id": course.pk, "title": course.title},
                "amount": str(payment.amount),
                "currency": payment.currency,
            },
            cause=Cause(actor=actor, correlation_id=correlation_id or payment_id),
        )
        return PurchaseResult(purchase=purchase, created=True)


MOVED_SEPARATOR = ">course-"


def moved_payment_id(payment_id: str, course_id: int) -> str:
    """The payment id of the purchase a move creates: derived, so repeating the move finds it."""
    return f"{payment_id}{MOVED_SEPARATOR}{course_id}"


def purchase_move(*, payment_id: str, course_id: int, actor: str) -> PurchaseResult:
    """Move a purchase to another course: refund it and create the new purchase in ONE transaction.

    Both events (`purchase.refunded`, then `purchase.created`) carry the original payment id as their
    correlation id, so `trace <payment_id>` shows the whole move as one chain; the new purchase's
    payment is `moved_payment_id(...)` with the original amount and currency. Idempotent: repeating a
    move returns the purchase it made (`created` False). Raises `UnknownPayment`, `UnknownCourse`,
    `MoveToSameCourse` or `NotMovable` (refunded, already moved elsewhere, or a payment id too long to
    derive the new one from) before writing anything; two moves of one purchase at once serialise on its
    row lock, and the second is refused.
    """
    target = moved_payment_id(payment_id, course_id)
    if len(target) > Payment._meta.get_field("provider_payment_id").max_length:  # type: ignore[operator]
        raise NotMovable(f"payment id {payment_id!r} is too long to move", payment_id=payment_id)
    with transaction.atomic():
        done = Purchase.objects.filter(payment__provider_payment_id=target).first()
        if done is not None:
            return PurchaseResult(purchase=done, created=False)
        purchase = (
            Purchase.objects.select_related("payment")
            .select_for_update(no_key=True, of=("self",))
            .filter(payment__provider_payment_id=payment_id)
            .first()
        )
        if purchase is None:
            raise UnknownPayment(f"no purchase for payment {payment_id!r}", payment_id=payment_id)
        if purchase.status == Purchase.Status.REFUNDED:
            raise NotMovable(f"purchase {purchase.pk} is refunded (or moved already)", payment_id=payment_id)
        if purchase.course_id == course_id:
            raise MoveToSameCourse(f"purchase {purchase.pk} is already for course {course_id}", course_id=course_id)
        if not Course.objects.filter(id=course_id).exists():
            raise UnknownCourse(f"no course with id {course_id}", course_id=course_id)
        purchase_refund(payment_id=payment_id, actor=actor)
        return purchase_create(
            payment_id=target,
            student_id=purchase.student_id,
            course_id=course_id,
            amount=purchase.payment.amount,
            currency=purchase.payment.currency,
            actor=actor,
            correlation_id=purchase.payment.provider_payment_id,
        )


def _payment_insert(*, payment_id: str, amount: Decimal, currency: str) -> Payment | None:
    """Insert the payment, or return None if one with this provider id exists.

    `ON CONFLICT DO NOTHING`: a concurrent call for the same payment blocks on the unique index until
    the first one commits, and then inserts nothing, so exactly one purchase results, with no error and
    no savepoint (`get_or_create` would take four round trips). Needs the caller's transaction.
    """
    received_at = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Payment._meta.db_table} (provider_payment_id, amount, currency, received_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (provider_payment_id) DO NOTHING RETURNING id",
            [payment_id, amount, currency, received_at],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    payment = Payment(id=row[0], provider_payment_id=payment_id, amount=amount, currency=currency)
    payment.received_at = received_at
    payment._state.adding = False
    payment._state.db = connection.alias
    return payment


def purchase_refund(*, payment_id: str, actor: str) -> PurchaseResult:
    """Refund a payment: the purchase becomes `refunded`, and `purchase.refunded` is emitted (its
    handler promotes the waitlist). Its trainer's place and its future sessions' slots are freed in
    the same transaction (`sessions.cancelled`), so both are free the moment the refund commits.

    Idempotent: refunding a refunded purchase changes nothing and emits nothing (`created` is False).
    Raises `UnknownPayment` if no purchase has this payment id.
    """
    from allocation.services import allocation_release
    from sessions_app.services import sessions_cancel

    with transaction.atomic():
        purchase = (
            Purchase.objects.select_for_update(no_key=True, of=("self",))
            .select_related("payment")
            .filter(payment__provider_payment_id=payment_id)
            .first()
        )
        if purchase is None:
            raise UnknownPayment(f"no purchase for payment {payment_id!r}", payment_id=payment_id)
        if purchase.status == Purchase.Status.REFUNDED:
            return PurchaseResult(purchase=purchase, created=False)
        previous = purchase.status
        released = allocation_release(purchase=purchase)
        purchase.status = Purchase.Status.REFUNDED
        purchase.save(update_fields=["status", "updated_at"])
        Payment.objects.filter(pk=purchase.payment_id).update(refunded_at=timezone.now())
        refunded = outbox.emit(
            type="purchase.refunded",
            student_id=purchase.student_id,
            aggregate_type="purchase",
            aggregate_id=purchase.pk,
            payload={
                "purchase_id": purchase.pk,
                "payment_id": payment_id,
                "status": purchase.status,
                "previous_status": previous,
                "released_trainer_id": released.trainer_id if released else None,
            },
            cause=Cause(actor=actor, correlation_id=payment_id),
        )
        sessions_cancel(
            purchase_id=purchase.pk, cause=Cause(actor=actor, correlation_id=payment_id, causation_id=refunded.id)
        )
        return PurchaseResult(purchase=purchase, created=True)


def student_resync_request(*, student_id: int, actor: str) -> OutboxEvent:
    """Emit `student.resync_requested` and return it: through the relay, the student's cached views
    are invalidated and their app is told to refetch. Safe to repeat (one more harmless event each)."""
    if not get_user_model().objects.filter(id=student_id).exists():
        raise UnknownStudent(f"no student with id {student_id}", student_id=student_id)
    with transaction.atomic():
        return outbox.emit(
            type="student.resync_requested",
            student_id=student_id,
            aggregate_type="student",
            aggregate_id=student_id,
            payload={"student_id": student_id},
            cause=Cause(actor=actor, correlation_id=f"resync:{student_id}:{uuid.uuid4().hex[:12]}"),
        )


class InvalidTimezone(ValueError):
    pass


def student_profile_update(*, student_id: int, timezone_name: str | None, actor: str) -> StudentProfile:
    """Set the student's time zone (an IANA name; None or "" clears it: the app then uses the
    device's zone). A change emits `student.resync_requested`, so the cached dashboard, which carries
    the zone, is refreshed and the student's open apps refetch. Raises `InvalidTimezone`."""
    from sessions_app.scheduling import UnknownTimezone, zone

    name = timezone_name or ""
    if name:
        try:
            zone(name)
        except UnknownTimezone as exc:
            raise InvalidTimezone(str(exc)) from exc
    with transaction.atomic():
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
    with transaction.atomic():
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
    with transaction.atomic():
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
