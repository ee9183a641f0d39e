"""Reads of purchases: the provider's records of a payment (the dashboard is in dashboard/selectors.py)."""

import json
from dataclasses import dataclass
from functools import cache

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Model

from kernel.rows import instance_from_row
from outbox.payment_records import PaymentRecord
from purchases.models import Course, Payment, ProviderEvent, Purchase


def raw_body_text(raw_body: bytes | memoryview | None) -> str:
    """The provider's exact bytes as text: they are UTF-8 (the webhook refuses anything else), and
    any other byte would show as an escape."""
    if raw_body is None:
        return "(not kept: recorded before the webhook kept raw bodies)"
    return bytes(raw_body).decode("utf-8", "backslashreplace")


def provider_event_records(payment_id: str) -> list[PaymentRecord]:
    """Every provider event recorded for this payment id, oldest first (for `trace`)."""
    events = ProviderEvent.objects.filter(payment_id=payment_id).order_by("id")[:100]
    return [
        PaymentRecord(
            summary=(
                f"{e.received_at:%Y-%m-%d %H:%M:%S} {e.type} event {e.provider_event_id}: {e.outcome}"
                + (f" {json.dumps(e.problem)}" if e.problem else "")
            ),
            body=raw_body_text(e.raw_body),
            fields={
                "provider_event_id": e.provider_event_id,
                "type": e.type,
                "outcome": e.outcome,
                "problem": e.problem,
                "received_at": e.received_at.isoformat(),
                "raw_body": raw_body_text(e.raw_body),
            },
        )
        for e in events
    ]


@dataclass(frozen=True)
class PaymentLookup:
    """What a payment's write checks first, read in one statement (`payment_lookup`)."""

    provider_event: ProviderEvent | None  # the provider event recorded with the asked id, if any
    purchase: Purchase | None  # the payment's purchase, with its payment loaded
    student_active: bool  # an active user has the asked id
    student_operator: bool  # that active user is staff or a superuser (an operator, never a buyer)
    course_title: str | None  # the asked course's title; None: there is no such course


def _columns(alias: str, model: type[Model]) -> str:
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)


@cache
def _lookup_sql() -> str:
    """One statement instead of four ORM queries (the provider event, the existing purchase, the
    student, the course): they were a quarter of the webhook's CPU time, and four round trips. Each
    join is on a unique key, so it returns exactly one row; a NULL argument matches nothing. Built on
    first use: the user model's table is known only once the apps are loaded."""
    return f"""
SELECT {_columns("pe", ProviderEvent)}, {_columns("pu", Purchase)}, {_columns("pay", Payment)},
       u.is_active, u.is_staff OR u.is_superuser, c.title
FROM (VALUES (1)) AS one (x)
LEFT JOIN {ProviderEvent._meta.db_table} pe ON pe.provider_event_id = %(event_id)s
LEFT JOIN {Payment._meta.db_table} pay ON pay.provider_payment_id = %(payment_id)s
LEFT JOIN {Purchase._meta.db_table} pu ON pu.payment_id = pay.id
LEFT JOIN {get_user_model()._meta.db_table} u ON u.id = %(student_id)s AND u.is_active
LEFT JOIN {Course._meta.db_table} c ON c.id = %(course_id)s
"""


def payment_lookup(
    *, payment_id: str, student_id: int | None, course_id: int | None, provider_event_id: str | None = None
) -> PaymentLookup:
    """What `purchase_create` (and the webhook, for a provider event) checks before writing: the
    provider event recorded as `provider_event_id`, the purchase of `payment_id`, whether
    `student_id` is an active user (and an operator), and `course_id`'s title. One round trip."""
    with connection.cursor() as cursor:
        cursor.execute(
            _lookup_sql(),
            {"event_id": provider_event_id, "payment_id": payment_id, "student_id": student_id, "course_id": course_id},
        )
        row = cursor.fetchone()
    event, row = instance_from_row(ProviderEvent, row), row[len(ProviderEvent._meta.concrete_fields) :]
    purchase, row = instance_from_row(Purchase, row), row[len(Purchase._meta.concrete_fields) :]
    payment, row = instance_from_row(Payment, row), row[len(Payment._meta.concrete_fields) :]
    if purchase is not None and payment is not None:  # a purchase always has its payment
        purchase.payment = payment
    active, operator, title = row
    return PaymentLookup(
        provider_event=event,
        purchase=purchase,
        student_active=bool(active),
        student_operator=bool(operator),
        course_title=title,
    )
