"""The webhook under concurrency, against a real ASGI server process: one purchase, no 5xx, no deadlock."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from outbox.models import OutboxEvent
from purchases.models import Course, Payment, ProviderEvent, Purchase
from tests.support.processes import Processes
from tests.support.webhooks import post_webhook, webhook_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def test_a_hundred_concurrent_copies_make_one_purchase(student: Any, course: Course, processes: Processes) -> None:
    host = processes.web()
    body = webhook_body(payment_id="pay_storm", student_id=student.pk, course_id=course.pk)
    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(lambda _: post_webhook(host, body, timeout=60), range(100)))
    assert [status for status, _ in results] == [200] * 100
    assert len({r["purchase_id"] for _, r in results}) == 1
    assert Purchase.objects.count() == 1 and Payment.objects.count() == 1 and ProviderEvent.objects.count() == 1
    assert OutboxEvent.objects.count() == 1


def test_fifty_different_events_for_one_payment_make_one_purchase(
    student: Any, course: Course, processes: Processes
) -> None:
    host = processes.web()
    bodies = [
        webhook_body(payment_id="pay_many", student_id=student.pk, course_id=course.pk, event_id=f"evt_{i}")
        for i in range(50)
    ]
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda b: post_webhook(host, b, timeout=60), bodies))
    assert [status for status, _ in results] == [200] * 50
    assert len({r["purchase_id"] for _, r in results}) == 1
    assert Purchase.objects.count() == 1 and ProviderEvent.objects.count() == 50
    assert OutboxEvent.objects.filter(type="purchase.created").count() == 1
