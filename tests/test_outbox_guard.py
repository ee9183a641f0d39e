"""Invariant 1: no state without its event, enforced by PostgreSQL at COMMIT."""

from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from allocation.models import Allocation
from outbox.models import OutboxEvent
from outbox.services import Cause, OutboxError, emit
from purchases.models import Course, Payment, Purchase
from sessions_app.models import TrainingSession
from tests.support.purchases import buy
from tests.support.trainers import available_trainer

pytestmark = pytest.mark.django_db(transaction=True)


def test_emit_outside_a_transaction_raises(student: Any) -> None:
    with pytest.raises(OutboxError):
        emit(
            type="purchase.created",
            student_id=student.pk,
            aggregate_type="purchase",
            aggregate_id=1,
            payload={},
            cause=Cause(actor="test", correlation_id="x"),
        )
    assert OutboxEvent.objects.count() == 0


def test_model_create_from_a_shell_fails_at_commit(student: Any, course: Course) -> None:
    payment = Payment.objects.create(provider_payment_id="pay_shell", amount=1, currency="EUR")
    with pytest.raises(IntegrityError, match="outbox guard"):
        Purchase.objects.create(payment=payment, student=student, course=course)
    assert not Purchase.objects.exists()


def test_queryset_update_fails_at_commit(student: Any, course: Course) -> None:
    purchase = buy(student, course)
    with pytest.raises(IntegrityError, match="outbox guard"):
        Purchase.objects.filter(pk=purchase.pk).update(status=Purchase.Status.REFUNDED)
    purchase.refresh_from_db()
    assert purchase.status == Purchase.Status.PENDING


def test_raw_sql_fails_at_commit(student: Any, course: Course) -> None:
    purchase = buy(student, course)
    with pytest.raises(IntegrityError, match="outbox guard"), connection.cursor() as cursor:
        cursor.execute("UPDATE purchases_purchase SET status = 'active' WHERE id = %s", [purchase.pk])
    with pytest.raises(IntegrityError, match="outbox guard"), connection.cursor() as cursor:
        cursor.execute("DELETE FROM purchases_purchase WHERE id = %s", [purchase.pk])
    assert Purchase.objects.get(pk=purchase.pk).status == Purchase.Status.PENDING


def test_the_guard_fires_at_commit_not_at_the_statement(student: Any, course: Course) -> None:
    """A transaction that writes the row first and its event later is fine: the check is deferred."""
    purchase = buy(student, course)
    with transaction.atomic():
        Purchase.objects.filter(pk=purchase.pk).update(status=Purchase.Status.WAITLISTED)
        emit(
            type="allocation.waitlisted",
            student_id=student.pk,
            aggregate_type="purchase",
            aggregate_id=purchase.pk,
            payload={},
            cause=Cause(actor="test", correlation_id="pay_1"),
        )
    assert Purchase.objects.get(pk=purchase.pk).status == Purchase.Status.WAITLISTED


def test_an_event_for_another_purchase_does_not_cover_the_change(student: Any, course: Course) -> None:
    first, second = buy(student, course, "pay_a"), buy(student, course, "pay_b")
    with pytest.raises(IntegrityError, match="outbox guard"), transaction.atomic():
        Purchase.objects.filter(pk=first.pk).update(status=Purchase.Status.WAITLISTED)
        emit(
            type="allocation.waitlisted",
            student_id=student.pk,
            aggregate_type="purchase",
            aggregate_id=second.pk,
            payload={},
            cause=Cause(actor="test", correlation_id="pay_b"),
        )


def test_allocation_and_session_tables_are_guarded(student: Any, course: Course) -> None:
    purchase = buy(student, course)
    trainer = available_trainer(name="T", capacity=3)
    with pytest.raises(IntegrityError, match="outbox guard"):
        Allocation.objects.create(purchase=purchase, trainer=trainer)
    with pytest.raises(IntegrityError, match="outbox guard"):
        TrainingSession.objects.create(
            purchase=purchase,
            trainer=trainer,
            number=1,
            starts_at="2030-01-01T10:00Z",
            ends_at="2030-01-01T11:00Z",
            duration_minutes=60,
        )
    assert not Allocation.objects.exists() and not TrainingSession.objects.exists()


def test_the_service_passes_the_guard_and_writes_its_event(student: Any, course: Course) -> None:
    purchase = buy(student, course)
    event = OutboxEvent.objects.get(aggregate_type="purchase", aggregate_id=str(purchase.pk))
    assert event.type == "purchase.created"
    assert event.seq == 1
    assert event.correlation_id == "pay_1"
    assert event.actor == "test"
    assert sorted(event.deliveries.values_list("sink", flat=True)) == ["allocation.allocate_trainer", "realtime"]
