"""Writers of allocations: choose a trainer for a purchase, or put it on the waitlist."""

from django.db import transaction
from django.db.models import F

from allocation.models import Allocation, Trainer
from outbox import services as outbox
from outbox.services import Cause
from purchases.models import Purchase


def trainer_allocate(*, purchase_id: int, cause: Cause) -> Allocation | None:
    """Allocate the least-loaded trainer with free capacity, or waitlist the purchase.

    Emits `trainer.allocated` or `allocation.waitlisted`. Idempotent: a purchase that is no longer
    pending is left alone (returns its allocation, if any). Capacity can't be exceeded by concurrent
    calls: the trainer is chosen under its row lock (`FOR UPDATE`, whose re-check after a wait skips
    a trainer that just filled up), and a CHECK constraint backs it.
    """
    with transaction.atomic():
        purchase = Purchase.objects.select_for_update().select_related("course").get(id=purchase_id)
        if purchase.status != Purchase.Status.PENDING:
            return Allocation.objects.filter(purchase=purchase).first()
        trainer = (
            Trainer.objects.select_for_update()
            .filter(active_count__lt=F("capacity"))
            .order_by("active_count", "id")
            .first()
        )
        if trainer is None:
            purchase.status = Purchase.Status.WAITLISTED
            purchase.save(update_fields=["status", "updated_at"])
            outbox.emit(
                type="allocation.waitlisted",
                student_id=purchase.student_id,
                aggregate_type="purchase",
                aggregate_id=purchase.pk,
                payload={"purchase_id": purchase.pk, "status": purchase.status},
                cause=cause,
            )
            return None
        Trainer.objects.filter(id=trainer.pk).update(active_count=F("active_count") + 1)
        allocation = Allocation.objects.create(purchase=purchase, trainer=trainer)
        purchase.status = Purchase.Status.ACTIVE
        purchase.save(update_fields=["status", "updated_at"])
        outbox.emit(
            type="trainer.allocated",
            student_id=purchase.student_id,
            aggregate_type="purchase",
            aggregate_id=purchase.pk,
            payload={
                "purchase_id": purchase.pk,
                "allocation_id": allocation.pk,
                "status": purchase.status,
                "trainer": {"id": trainer.pk, "name": trainer.name},
            },
            cause=cause,
        )
        return allocation
