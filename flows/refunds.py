"""A refund: the purchase is refunded, its trainer's place released and its future sessions cancelled,
in one transaction; the allocation app's handler of `purchase.refunded` then promotes the waitlist."""

from dataclasses import dataclass

from django.db import transaction

from allocation.services import allocation_release
from outbox.services import Cause
from purchases.models import Purchase
from purchases.services import purchase_lock, purchase_refund_record
from sessions_app.services import sessions_cancel


@dataclass(frozen=True)
class RefundResult:
    purchase: Purchase
    refunded: bool  # False: it was refunded already, and nothing changed


def purchase_refund(*, payment_id: str, actor: str) -> RefundResult:
    """Refund a payment: the purchase becomes `refunded`, and `purchase.refunded` is emitted (its
    handler promotes the waitlist). Its trainer's place and its future sessions' slots are freed in
    the same transaction (`sessions.cancelled`), so both are free the moment the refund commits.

    Idempotent: refunding a refunded purchase changes nothing and emits nothing (`refunded` is False).
    Raises `UnknownPayment` if no purchase has this payment id. Composable: inside a caller's
    transaction (a webhook, a move) it is part of it, without a savepoint.
    """
    with transaction.atomic(savepoint=False):
        purchase = purchase_lock(payment_id=payment_id)
        if purchase.status == Purchase.Status.REFUNDED:
            return RefundResult(purchase=purchase, refunded=False)
        released = allocation_release(purchase=purchase)
        refunded = purchase_refund_record(
            purchase=purchase, released_trainer_id=released.trainer_id if released else None, actor=actor
        )
        sessions_cancel(
            purchase_id=purchase.pk, cause=Cause(actor=actor, correlation_id=payment_id, causation_id=refunded.id)
        )
        return RefundResult(purchase=purchase, refunded=True)
