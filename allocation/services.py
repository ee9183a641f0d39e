"""Writers of allocations: choose a trainer for a purchase, waitlist it, release it, promote the waitlist."""

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from allocation.models import Allocation, Trainer
from outbox import services as outbox
from outbox.services import Cause
from purchases.models import Purchase


def trainer_allocate(*, purchase_id: int, cause: Cause) -> Allocation | None:
    """Allocate the least-loaded trainer with free capacity to a pending or waitlisted purchase.

    Emits `trainer.allocated`; a pending purchase with no trainer free is waitlisted instead
    (`allocation.waitlisted`); a waitlisted one stays so, with no new event. Idempotent: an active
    or refunded purchase is left alone (returns its allocation, if any).

    Capacity can't be exceeded and concurrent allocations can't deadlock: the place is taken by a
    conditional `UPDATE ... WHERE active_count < capacity` on one trainer row at a time (re-checked
    under that row's lock), so a transaction never holds one trainer while waiting for another. A
    CHECK constraint backs it.
    """
    with transaction.atomic():
        purchase = Purchase.objects.select_for_update().get(id=purchase_id)
        if purchase.status not in (Purchase.Status.PENDING, Purchase.Status.WAITLISTED):
            return Allocation.objects.filter(purchase=purchase, released_at__isnull=True).first()
        trainer = _take_a_place()
        if trainer is None and purchase.status == Purchase.Status.PENDING:
            # Before waitlisting, serialise with refunds: either a refund that frees a place commits
            # first (and the second look sees it), or it waits until this purchase is on the waitlist
            # that its promotion handler will read. Without this, a place freed in between was lost.
            _lock_waitlist()
            trainer = _take_a_place()
            if trainer is None:
                _waitlist(purchase, cause)
                return None
        if trainer is None:
            return None
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


def _take_a_place() -> Trainer | None:
    """Increment the least-loaded free trainer's count; None when every trainer is full.

    Candidates come from a fresh snapshot each round; a lost race (the trainer filled up meanwhile)
    moves on to the next one, and a round where every candidate was lost reads again, so a place that
    exists is never missed.
    """
    while True:
        candidates = list(
            Trainer.objects.filter(active_count__lt=F("capacity"))
            .order_by("active_count", "id")
            .values_list("id", flat=True)
        )
        if not candidates:
            return None
        for trainer_id in candidates:
            # Take the place and read the trainer back in one statement.
            taken = Trainer.objects.raw(
                f"UPDATE {Trainer._meta.db_table} SET active_count = active_count + 1 "
                "WHERE id = %s AND active_count < capacity RETURNING *",
                [trainer_id],
            )
            for trainer in taken:
                return trainer


WAITLIST_LOCK = 7_240_001  # pg_advisory_xact_lock key: "the waitlist and freed places"


def _lock_waitlist() -> None:
    """Held to COMMIT; taken only on the rare paths (waitlisting, releasing), never per allocation."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [WAITLIST_LOCK])


def _waitlist(purchase: Purchase, cause: Cause) -> None:
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


def waitlist_promote(*, cause: Cause, limit: int = 100) -> list[Allocation]:
    """Allocate waitlisted purchases, oldest first, while any trainer has free capacity.

    Each allocation is its own transaction (through `trainer_allocate`), so a concurrent promotion
    can't allocate the same purchase twice and capacity is never exceeded. Idempotent. Each new
    allocation belongs to its own payment's chain (correlation) and names `cause` as its cause.
    """
    allocated: list[Allocation] = []
    waiting = Purchase.objects.filter(status=Purchase.Status.WAITLISTED).order_by("created_at", "id")
    for purchase_id, payment_id in waiting.values_list("id", "payment__provider_payment_id")[:limit]:
        if not Trainer.objects.filter(active_count__lt=F("capacity")).exists():
            break
        allocation = trainer_allocate(
            purchase_id=purchase_id,
            cause=Cause(actor=cause.actor, correlation_id=payment_id, causation_id=cause.causation_id),
        )
        if allocation is not None:
            allocated.append(allocation)
    return allocated


class CapacityBelowLoad(Exception):
    pass


def trainer_save(*, trainer_id: int | None, name: str, capacity: int, actor: str) -> Trainer:
    """Create or edit a trainer (reference data: no event of its own).

    Capacity never goes below the trainer's active purchases: checked under the trainer's row lock
    (raises `CapacityBelowLoad`). A rename asks each student the trainer teaches to resync
    (`student.resync_requested`), so no cached dashboard keeps showing the old name.
    """
    from purchases.services import student_resync_request

    with transaction.atomic():
        if trainer_id is None:
            return Trainer.objects.create(name=name, capacity=capacity)
        trainer = Trainer.objects.select_for_update(no_key=True).get(id=trainer_id)  # allocations keep inserting
        if capacity < trainer.active_count:
            raise CapacityBelowLoad(
                f"{trainer.name} has {trainer.active_count} active purchases; capacity can't go below that."
            )
        renamed = trainer.name != name
        Trainer.objects.filter(id=trainer_id).update(name=name, capacity=capacity)
        if renamed:
            students = Allocation.objects.filter(trainer_id=trainer_id, released_at__isnull=True).values_list(
                "purchase__student_id", flat=True
            )
            for student_id in sorted(set(students)):
                student_resync_request(student_id=student_id, actor=actor)
        trainer.refresh_from_db()
        return trainer
