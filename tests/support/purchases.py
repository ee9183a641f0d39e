"""Purchases made through the services, as the webhook would make them."""

from decimal import Decimal
from typing import Any

from purchases.models import Course
from purchases.services import purchase_create


def buy(student: Any, course: Course, payment_id: str = "pay_1", *, actor: str = "test") -> Any:
    """A purchase through the service, as the webhook would make it."""
    return purchase_create(
        payment_id=payment_id,
        student_id=student.pk,
        course_id=course.pk,
        amount=Decimal("1"),
        currency="EUR",
        actor=actor,
    ).purchase
