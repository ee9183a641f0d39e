"""End to end through real processes: ASGI server, relay(s) and a Celery worker, on real PostgreSQL
and Redis. Nothing here runs eagerly."""

from decimal import Decimal
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import transaction

from allocation.models import Trainer
from outbox.models import Delivery, InboxEntry, OutboxEvent
from purchases.models import Course, Purchase
from purchases.services import purchase_create
from realtime.testing import GroupListener
from tests.support.processes import Processes
from tests.support.trainers import available_trainer
from tests.support.waiting import wait_until
from tests.support.webhooks import http, signature, webhook_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def all_done(expected: int) -> bool:
    statuses = list(Delivery.objects.values_list("status", flat=True))
    return len(statuses) == expected and set(statuses) == {"done"}


def test_webhook_to_sessions_through_relay_and_worker_processes(
    student: Any, course: Course, trainer: Trainer, processes: Processes
) -> None:
    host = processes.web()
    processes.worker()
    processes.relay()
    token = {"Authorization": f"Token {student.auth_token.key}"}
    status, empty = http(host, "/api/v1/me/dashboard", headers=token)
    assert status == 200 and empty["purchases"] == [] and empty["seq"] == 0  # now cached at seq 0

    with GroupListener([student.pk]) as listener:
        body = webhook_body(payment_id="pay_e2e", student_id=student.pk, course_id=course.pk)
        status, result = http(
            host,
            "/api/v1/payments/webhook",
            body=body,
            headers={"Content-Type": "application/json", "Payment-Signature": signature(body)},
        )
        assert status == 200 and result["status"] == "pending"
        wait_until(lambda: all_done(5), what="every delivery done")
        wait_until(lambda: len(listener.events[student.pk]) == 3, what="three pushes")

    pushed = listener.events[student.pk]
    assert [e["type"] for e in pushed] == ["purchase.created", "trainer.allocated", "sessions.generated"]
    assert [e["seq"] for e in pushed] == [1, 2, 3]
    created, allocated, generated = OutboxEvent.objects.order_by("seq")
    assert [str(e.id) for e in (created, allocated, generated)] == [e["id"] for e in pushed]
    assert {e.correlation_id for e in (created, allocated, generated)} == {"pay_e2e"}
    assert (created.causation_id, allocated.causation_id, generated.causation_id) == (None, created.id, allocated.id)
    assert (created.actor, allocated.actor, generated.actor) == (
        "webhook",
        "handler:allocation.allocate_trainer",
        "handler:sessions.generate",
    )
    # The relay raised the student's cache floor, so the seq-0 view cached above is not served.
    floor = redis.Redis.from_url(settings.REDIS_URL).hget(f"{settings.READ_CACHE_PREFIX}:student:{student.pk}", "floor")
    assert floor == b"3"
    status, dashboard = http(host, "/api/v1/me/dashboard", headers=token)
    assert dashboard["seq"] == 3
    (purchase,) = dashboard["purchases"]
    assert purchase["id"] == result["purchase_id"] and purchase["status"] == "active"
    assert purchase["trainer"] == {"id": trainer.pk, "name": trainer.name}
    assert len(purchase["sessions"]) == course.sessions_count


def test_two_relays_drain_one_backlog_once_per_sink_in_order(
    make_student: Any, course: Course, processes: Processes
) -> None:
    available_trainer(name="Big", capacity=10_000)
    students = [make_student() for _ in range(20)]
    per_student = 10
    processes.worker()
    relays = [processes.relay(name, OUTBOX_BATCH_SIZE="25") for name in ("relay1", "relay2")]
    wait_until(lambda: all("started" in processes.log(n) for n in ("relay1", "relay2")), what="relays up")

    with GroupListener([s.pk for s in students]) as listener:
        with transaction.atomic():  # one backlog, one NOTIFY: both relays wake on it together
            for i in range(per_student):
                for s in students:
                    purchase_create(
                        payment_id=f"pay_{s.pk}_{i}",
                        student_id=s.pk,
                        course_id=course.pk,
                        amount=Decimal("1"),
                        currency="EUR",
                        actor="test",
                    )
        events = len(students) * per_student * 3
        wait_until(lambda: all_done(events + 2 * len(students) * per_student), timeout=120, what="backlog drained")
        wait_until(lambda: listener.count() == events, what="every push")

    assert all(r.poll() is None for r in relays)
    for s in students:
        assert listener.seqs(s.pk) == list(range(1, per_student * 3 + 1))  # each once, in order
    assert set(Delivery.objects.values_list("attempts", flat=True)) == {1}  # no delivery claimed twice
    assert InboxEntry.objects.count() == 2 * len(students) * per_student
    assert Purchase.objects.filter(status="active").count() == len(students) * per_student
    assert len(set(Delivery.objects.values_list("claimed_by", flat=True))) == 2  # both relays took part
