"""Allocation: least-loaded trainer, waitlist, capacity never exceeded under concurrency."""

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections
from django.db.models import Count, Q

from allocation.models import Allocation, Trainer
from allocation.services import trainer_allocate
from flows.refunds import purchase_refund
from outbox.models import OutboxEvent
from outbox.services import Cause
from purchases.models import Course, Purchase
from purchases.services import purchase_create
from tests.support.purchases import buy
from tests.support.trainers import available_trainer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _purchases(student: Any, course: Course, n: int) -> list[Purchase]:
    return [
        purchase_create(
            payment_id=f"pay_{student.pk}_{i}",
            student_id=student.pk,
            course_id=course.pk,
            amount=Decimal("1"),
            currency="EUR",
            actor="test",
        ).purchase
        for i in range(n)
    ]


def _cause(purchase: Purchase) -> Cause:
    return Cause(actor="test", correlation_id=purchase.payment.provider_payment_id)


def test_least_loaded_trainer_then_waitlist(student: Any, course: Course) -> None:
    busy = available_trainer(name="Busy", capacity=2)
    idle = available_trainer(name="Idle", capacity=1)
    p1, p2, p3, p4 = _purchases(student, course, 4)
    assert trainer_allocate(purchase_id=p1.pk, cause=_cause(p1)).trainer == busy  # type: ignore[union-attr]
    assert trainer_allocate(purchase_id=p2.pk, cause=_cause(p2)).trainer == idle  # type: ignore[union-attr]
    assert trainer_allocate(purchase_id=p3.pk, cause=_cause(p3)).trainer == busy  # type: ignore[union-attr]
    assert trainer_allocate(purchase_id=p4.pk, cause=_cause(p4)) is None
    p4.refresh_from_db()
    assert p4.status == Purchase.Status.WAITLISTED
    types = list(OutboxEvent.objects.filter(aggregate_id=str(p4.pk)).order_by("seq").values_list("type", flat=True))
    assert types == ["purchase.created", "allocation.waitlisted"]


def test_allocate_is_idempotent(student: Any, course: Course, trainer: Trainer) -> None:
    (purchase,) = _purchases(student, course, 1)
    first = trainer_allocate(purchase_id=purchase.pk, cause=_cause(purchase))
    again = trainer_allocate(purchase_id=purchase.pk, cause=_cause(purchase))
    assert first == again
    assert Allocation.objects.count() == 1
    assert OutboxEvent.objects.filter(type="trainer.allocated").count() == 1
    trainer.refresh_from_db()
    assert trainer.active_count == 1


def test_capacity_is_never_exceeded_by_concurrent_allocations(make_student: Any, course: Course) -> None:
    capacities = [3, 2, 2, 1]
    for i, cap in enumerate(capacities):
        available_trainer(name=f"T{i}", capacity=cap)
    students = [make_student() for _ in range(12)]
    purchases = [p for s in students for p in _purchases(s, course, 4)]  # 48 purchases, 8 places

    def allocate(purchase: Purchase) -> bool:
        try:
            return trainer_allocate(purchase_id=purchase.pk, cause=_cause(purchase)) is not None
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(allocate, purchases))

    assert sum(results) == sum(capacities)
    for trainer in Trainer.objects.annotate(n=Count("allocations", filter=Q(allocations__released_at=None))):
        assert trainer.n <= trainer.capacity
        assert trainer.active_count == trainer.n
    assert Purchase.objects.filter(status=Purchase.Status.ACTIVE).count() == sum(capacities)
    assert Purchase.objects.filter(status=Purchase.Status.WAITLISTED).count() == len(purchases) - sum(capacities)


def test_a_promotion_that_waited_for_the_purchase_sees_a_place_freed_meanwhile(student: Any, course: Course) -> None:
    """trainer_allocate reads the trainers in the snapshot of the statement that locks the purchase; had
    it waited for that lock, a refund committed meanwhile would be missing from it, and a waitlisted
    purchase being promoted would be passed over although its trainer now has a place."""
    solo = available_trainer("Solo", 1)
    first = buy(student, course, "pay_first")
    assert trainer_allocate(purchase_id=first.pk, cause=Cause(actor="t", correlation_id="pay_first")) is not None
    waiting = buy(student, course, "pay_waiting")
    assert trainer_allocate(purchase_id=waiting.pk, cause=Cause(actor="t", correlation_id="pay_waiting")) is None
    waiting.refresh_from_db()
    assert waiting.status == Purchase.Status.WAITLISTED

    holder = connections.create_connection("default")  # another writer holding the purchase, e.g. a promotion
    holder.set_autocommit(False)
    with holder.cursor() as cursor:
        cursor.execute("SELECT 1 FROM purchases_purchase WHERE id = %s FOR UPDATE", [waiting.pk])

    def promote() -> Any:
        try:
            return trainer_allocate(purchase_id=waiting.pk, cause=Cause(actor="t", correlation_id="pay_waiting"))
        finally:
            connections.close_all()

    def blocked_on_a_lock() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0] > 0

    with ThreadPoolExecutor(1) as pool:
        promoted = pool.submit(promote)
        wait_until(blocked_on_a_lock, what="the promotion waiting for the purchase's lock")
        purchase_refund(payment_id="pay_first", actor="test")  # frees Solo's only place, and commits
        holder.commit()
        holder.close()
        allocation = promoted.result(timeout=20)
    assert allocation is not None and allocation.trainer_id == solo.pk
    waiting.refresh_from_db()
    assert waiting.status == Purchase.Status.ACTIVE
