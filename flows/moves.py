"""An operator's move of a purchase to another course: the refund flow and a new purchase, in one
transaction, as one payment chain."""

from django.db import transaction

from flows.refunds import purchase_refund
from purchases.errors import MoveToSameCourse, NotMovable, UnknownCourse, UnknownPayment
from purchases.models import Course, Payment, Purchase
from purchases.services import PurchaseResult, purchase_create

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
    with transaction.atomic(durable=True):
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
