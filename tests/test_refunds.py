"""Refunds free the trainer's place, cancel future sessions and promote the waitlist, via the outbox."""

from typing import Any

import pytest

from allocation.models import Trainer
from flows.refunds import purchase_refund
from outbox.models import OutboxEvent
from outbox.testing import deliver_outbox, deliver_pending
from purchases.errors import UnknownPayment
from purchases.models import Course
from sessions_app.models import TrainingSession
from tests.support.purchases import buy
from tests.support.trainers import available_trainer

pytestmark = pytest.mark.django_db(transaction=True)


def test_refund_frees_capacity_and_the_waitlisted_purchase_gets_it(make_student: Any, course: Course) -> None:
    trainer = available_trainer(name="Solo", capacity=1)
    first_student, second_student = make_student(), make_student()
    with deliver_outbox():
        first = buy(first_student, course, "pay_first")
    with deliver_outbox():
        second = buy(second_student, course, "pay_second")
    second.refresh_from_db()
    assert second.status == "waitlisted"

    result = purchase_refund(payment_id="pay_first", actor="test")
    assert result.refunded and result.purchase.status == "refunded"
    trainer.refresh_from_db()
    assert trainer.active_count == 0  # freed in the refund's own transaction
    deliver_pending()

    second.refresh_from_db()
    trainer.refresh_from_db()
    assert second.status == "active" and second.allocation.trainer == trainer
    assert trainer.active_count == 1
    assert TrainingSession.objects.filter(purchase=second, status="scheduled").count() == course.sessions_count
    assert TrainingSession.objects.filter(purchase=first, status="cancelled").count() == course.sessions_count
    first_chain = list(
        OutboxEvent.objects.filter(correlation_id="pay_first").order_by("seq").values_list("type", flat=True)
    )
    assert first_chain == [
        "purchase.created",
        "trainer.allocated",
        "sessions.generated",
        "purchase.refunded",
        "sessions.cancelled",
    ]
    refunded = OutboxEvent.objects.get(type="purchase.refunded")
    promoted = OutboxEvent.objects.get(type="trainer.allocated", correlation_id="pay_second")
    assert promoted.causation_id == refunded.id


def test_refund_is_idempotent(student: Any, course: Course, trainer: Trainer) -> None:
    buy(student, course, "pay_1")
    assert purchase_refund(payment_id="pay_1", actor="test").refunded is True
    assert purchase_refund(payment_id="pay_1", actor="test").refunded is False
    assert OutboxEvent.objects.filter(type="purchase.refunded").count() == 1


def test_refund_of_an_unknown_payment_raises(db: None) -> None:
    with pytest.raises(UnknownPayment):
        purchase_refund(payment_id="nope", actor="test")
