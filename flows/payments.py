"""A payment provider's event, applied exactly once: `payment.succeeded` creates the purchase,
`payment.refunded` refunds it (the refund flow), anything else is recorded as ignored."""

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from flows.moves import MOVED_SEPARATOR
from flows.refunds import purchase_refund
from purchases.errors import EventConflict
from purchases.models import ProviderEvent, Purchase
from purchases.provider_body import storable
from purchases.selectors import PaymentLookup, payment_lookup
from purchases.services import purchase_create


@dataclass(frozen=True)
class ProviderEventResult:
    """`outcome` is the event's recorded outcome: `applied` and `ignored` succeeded; `conflict` (the
    payment id is recorded with other terms) and `mismatch` (a refund for another student or course)
    changed nothing. `problem` says what differed; `purchase` is the payment's purchase, if any."""

    purchase: Purchase | None
    outcome: str
    problem: dict[str, Any]


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
    # The record's payment id, by which it finds its payment again: for handled types the validated
    # (trimmed) id, which storable() and the cut leave as it is (no NUL, no lone surrogate, 128 at most).
    payment_id = storable(str(data.get("payment_id", "")))[:128] if isinstance(data, dict) else ""
    succeeded = type == PAYMENT_SUCCEEDED
    with transaction.atomic(durable=True):
        lookup = payment_lookup(
            provider_event_id=event_id,
            payment_id=payment_id,
            student_id=data["student_id"] if succeeded else None,
            course_id=data["course_id"] if succeeded else None,
        )
        if lookup.provider_event is not None:
            return _replayed(lookup.provider_event, lookup, payment_id=payment_id, raw_body=raw_body, payload=payload)
        purchase, outcome, problem = None, ProviderEvent.Outcome.IGNORED, {}
        if succeeded:
            result = purchase_create(
                payment_id=data["payment_id"],
                student_id=data["student_id"],
                course_id=data["course_id"],
                amount=data["amount"],
                currency=data["currency"],
                actor="webhook",
                lookup=lookup,
            )
            purchase, outcome = result.purchase, ProviderEvent.Outcome.APPLIED
            if not result.created:
                problem = _differences(purchase, data, ("student", "course", "amount", "currency"))
        elif type == PAYMENT_REFUNDED:
            purchase = lookup.purchase
            problem = _differences(purchase, data, ("student", "course")) if purchase else {}
            if not problem:
                # The money goes back for whichever course the payment holds now: after an operator's move
                # that is the moved purchase, not the refunded original.
                held = _held_purchase_of(purchase) if purchase is not None else None
                refunded_id = held.payment.provider_payment_id if held is not None else data["payment_id"]
                refunded = purchase_refund(payment_id=refunded_id, actor="webhook")
                purchase, outcome = refunded.purchase, ProviderEvent.Outcome.APPLIED
        if problem:
            outcome = ProviderEvent.Outcome.CONFLICT if succeeded else ProviderEvent.Outcome.MISMATCH
        # A concurrent call for the same event id may have recorded it first (we waited for it on the
        # unique index): then ours is a replay of it, or a conflict that must leave nothing behind.
        recorded = _record(
            event_id=event_id,
            type=type,
            payment_id=payment_id,
            outcome=outcome,
            payload=payload,
            raw_body=raw_body,
            problem=problem,
        )
        if not recorded and not ProviderEvent.objects.filter(provider_event_id=event_id, raw_body=raw_body).exists():
            raise EventConflict(f"event {event_id!r} is recorded with another body", event_id=event_id)
        return ProviderEventResult(purchase=purchase, outcome=outcome, problem=problem)


def _replayed(
    seen: ProviderEvent, lookup: PaymentLookup, *, payment_id: str, raw_body: bytes, payload: dict[str, Any]
) -> ProviderEventResult:
    """The answer to a retry of a recorded event: its recorded outcome, if the body is the same."""
    same = bytes(seen.raw_body) == raw_body if seen.raw_body is not None else seen.payload == payload
    if not same:
        event_id = seen.provider_event_id
        raise EventConflict(f"event {event_id!r} is recorded with another body", event_id=event_id)
    # The same body, so the same payment id, whose purchase the lookup has read already (unless the
    # record was written by older code that kept the id otherwise).
    purchase = lookup.purchase if seen.payment_id == payment_id else _purchase_of(seen.payment_id)
    if purchase is not None and seen.type == PAYMENT_REFUNDED and seen.outcome == ProviderEvent.Outcome.APPLIED:
        purchase = _held_purchase_of(purchase)
    return ProviderEventResult(purchase=purchase, outcome=seen.outcome, problem=seen.problem)


# The record in one round trip (it was an ORM bulk_create and an exists() query every time): a new
# event id is recorded, and only when none was (a concurrent call recorded the id first, and we
# waited for it on the unique index) does the caller compare the recorded body.
_RECORD_SQL = f"""
INSERT INTO {ProviderEvent._meta.db_table}
    (provider_event_id, type, payment_id, outcome, payload, raw_body, problem, received_at)
VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s)
ON CONFLICT DO NOTHING
RETURNING id
"""


def _record(
    *,
    event_id: str,
    type: str,
    payment_id: str,
    outcome: str,
    payload: dict[str, Any],
    raw_body: bytes,
    problem: dict[str, Any],
) -> bool:
    """Record the provider event; False if one with its id is recorded already (nothing written)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _RECORD_SQL,
            [event_id, type, payment_id, outcome, json.dumps(payload), raw_body, json.dumps(problem), timezone.now()],
        )
        return cursor.fetchone() is not None


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
