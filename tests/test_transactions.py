"""Transactions as Zulip writes them: entry points are durable, composable services join their
caller's transaction with `savepoint=False`, and the runner gives each handler a durable one. So the
hot paths, the webhook and the handlers, send no SAVEPOINT at all (each is a round trip)."""

from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from allocation.models import Trainer
from outbox.models import Delivery
from outbox.runner import run_handler_batch
from purchases.models import Course, Purchase
from sessions_app.models import TrainingSession
from tests.support.webhooks import signature, webhook_body

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/payments/webhook"


def savepoints(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if "SAVEPOINT" in q["sql"].upper()]


def post_webhook(client: Client, body: bytes) -> Any:
    response = client.post(
        URL, data=body, content_type="application/json", headers={"Payment-Signature": signature(body)}
    )
    assert response.status_code == 200, response.content
    return response


def run_handler(sink: str) -> int:
    """Run `sink`'s open deliveries through the runner, as a worker would; how many there were."""
    ids = list(Delivery.objects.filter(sink=sink, status=Delivery.Status.PENDING).values_list("id", flat=True))
    run_handler_batch(sink=sink, delivery_ids=ids)
    return len(ids)


def test_the_webhook_takes_no_savepoint_for_a_payment_nor_for_a_refund(
    client: Client, student: Any, course: Course, trainer: Trainer
) -> None:
    paid = webhook_body(payment_id="pay_1", student_id=student.pk, course_id=course.pk)
    with CaptureQueriesContext(connection) as captured:
        post_webhook(client, paid)
    assert Purchase.objects.get().status == "pending"
    assert savepoints(captured) == []

    assert run_handler("allocation.allocate_trainer") == 1
    assert run_handler("sessions.generate") == 1
    assert TrainingSession.objects.filter(status="scheduled").exists()

    # The refund path: release the trainer's place and cancel the sessions, in the webhook's transaction.
    refunded = webhook_body(
        payment_id="pay_1", student_id=student.pk, course_id=course.pk, event_id="evt_refund", type="payment.refunded"
    )
    with CaptureQueriesContext(connection) as captured:
        post_webhook(client, refunded)
    assert Purchase.objects.get().status == "refunded"
    assert not TrainingSession.objects.filter(status="scheduled").exists()
    assert savepoints(captured) == []


def test_the_handlers_take_no_savepoint(client: Client, student: Any, course: Course, trainer: Trainer) -> None:
    post_webhook(client, webhook_body(payment_id="pay_1", student_id=student.pk, course_id=course.pk))
    with CaptureQueriesContext(connection) as captured:
        assert run_handler("allocation.allocate_trainer") == 1
    assert Purchase.objects.get().status == "active"
    assert savepoints(captured) == []

    with CaptureQueriesContext(connection) as captured:
        assert run_handler("sessions.generate") == 1
    assert TrainingSession.objects.filter(status="scheduled").count() == course.sessions_count
    assert savepoints(captured) == []

    # A refund's reactions: the waitlist promotion and the (already done) cancellation.
    refunded = webhook_body(
        payment_id="pay_1", student_id=student.pk, course_id=course.pk, event_id="evt_refund", type="payment.refunded"
    )
    post_webhook(client, refunded)
    with CaptureQueriesContext(connection) as captured:
        assert run_handler("allocation.promote_waitlist") == 1
        assert run_handler("sessions.cancel") == 1
    assert savepoints(captured) == []


def test_the_counter_sees_a_savepoint_when_there_is_one(db: None) -> None:
    with CaptureQueriesContext(connection) as captured, transaction.atomic(), transaction.atomic():
        pass
    assert len(savepoints(captured)) >= 1
