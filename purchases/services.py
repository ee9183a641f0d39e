"""Writers of purchases. The webhook, the admin and `fix_purchase` all come through here."""

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction

from outbox import services as outbox
from outbox.services import Cause
from purchases.errors import UnknownCourse, UnknownStudent
from purchases.models import Course, Payment, Purchase


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
) -> PurchaseResult:
    """Turn a successful payment into a purchase and emit `purchase.created`.

    Idempotent by `payment_id`, also under concurrency: every call for the same payment returns the
    same purchase, and only the first one writes anything or emits. The event's correlation id is
    the payment id; `actor` says who asked (webhook, admin user, command).
    Raises `UnknownStudent` / `UnknownCourse` before writing anything.
    """
    with transaction.atomic():
        existing = Purchase.objects.filter(payment__provider_payment_id=payment_id).first()
        if existing is not None:
            return PurchaseResult(purchase=existing, created=False)
        student = get_user_model().objects.filter(id=student_id, is_active=True).first()
        if student is None:
            raise UnknownStudent(f"no active student with id {student_id}", student_id=student_id)
        course = Course.objects.filter(id=course_id).first()
        if course is None:
            raise UnknownCourse(f"no course with id {course_id}", course_id=course_id)
        # A concurrent call for the same payment blocks on the unique index until the first commits,
        # then get_or_create finds its row: exactly one purchase, no error.
        payment, created = Payment.objects.get_or_create(
            provider_payment_id=payment_id, defaults={"amount": amount, "currency": currency.upper()}
        )
        if not created:
            return PurchaseResult(purchase=Purchase.objects.get(payment=payment), created=False)
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
            cause=Cause(actor=actor, correlation_id=payment_id),
        )
        return PurchaseResult(purchase=purchase, created=True)
