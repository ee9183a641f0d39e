"""Races for a trainer's slots on the real PostgreSQL: concurrent purchases and reschedules never
overlap (the exclusion constraint holds), and a loser takes the next free place instead of failing."""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import time
from typing import Any, TypeVar

import pytest
from django.db import connection

from allocation.services import trainer_allocate
from outbox.models import OutboxEvent
from outbox.services import Cause
from purchases.models import Course, Purchase
from sessions_app.models import TrainingSession
from sessions_app.services import session_reschedule, sessions_generate
from tests.support.purchases import buy
from tests.support.trainers import available_trainer
from tests.support.trainers import overlapping_sessions as overlaps

pytestmark = pytest.mark.django_db(transaction=True)
T = TypeVar("T")


def all_at_once(func: Callable[[Any], T], items: list[Any], workers: int = 16) -> list[T]:
    """Run `func` over `items` in threads, each with its own connection; the first `workers` start together."""
    go = threading.Event()

    def run(item: Any) -> T:
        try:
            go.wait(timeout=60)
            return func(item)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, item) for item in items]
        go.set()
        return [f.result() for f in futures]


def test_50_concurrent_purchases_for_one_trainer_never_overlap(
    make_student: Any, course: Course, caplog: pytest.LogCaptureFixture
) -> None:
    # Two one-hour slots a day: the earliest series is what every purchase wants first.
    trainer = available_trainer("Busy", 50, tz="Europe/Berlin", windows=[(d, time(10), time(12)) for d in range(7)])
    students = [make_student() for _ in range(10)]
    purchases = [buy(students[i % 10], course, f"pay_{i}") for i in range(50)]

    def chain(purchase: Purchase) -> int:
        cause = Cause(actor="test", correlation_id=purchase.payment.provider_payment_id)
        trainer_allocate(purchase_id=purchase.pk, cause=cause)
        return len(sessions_generate(purchase_id=purchase.pk, cause=cause))

    with caplog.at_level(logging.INFO, logger="sessions_app.services"):
        placed = all_at_once(chain, purchases)

    assert placed == [course.sessions_count] * 50  # nobody failed or was waitlisted
    assert Purchase.objects.filter(status="active").count() == 50
    assert TrainingSession.objects.filter(trainer=trainer, status="scheduled").count() == 50 * course.sessions_count
    assert overlaps() == 0
    assert OutboxEvent.objects.filter(type="sessions.generated").count() == 50
    lost = [r for r in caplog.records if "lost a race" in r.getMessage()]
    assert lost, "the purchases never raced for a slot: the test proves nothing"


def test_concurrent_reschedules_into_the_same_free_slot_take_the_next_ones(make_student: Any) -> None:
    course = Course.objects.create(title="One", sessions_count=1, session_minutes=60, price=1)
    available_trainer("Ada", 20, windows=[(d, time(8), time(20)) for d in range(7)])
    purchases = []
    for i in range(8):
        purchase = buy(make_student(), course, f"pay_{i}")
        cause = Cause(actor="test", correlation_id=f"pay_{i}")
        trainer_allocate(purchase_id=purchase.pk, cause=cause)
        sessions_generate(purchase_id=purchase.pk, cause=cause)
        purchases.append(purchase)
    sessions = list(TrainingSession.objects.order_by("starts_at"))
    before = {s.pk: s.starts_at for s in sessions}

    moved = all_at_once(lambda s: session_reschedule(session_id=s.pk, actor="test"), sessions, workers=8)

    assert overlaps() == 0
    assert len({m.starts_at for m in moved}) == len(sessions)
    assert all(m.starts_at > before[m.pk] for m in moved)
    assert OutboxEvent.objects.filter(type="session.rescheduled").count() == len(sessions)


def test_the_same_session_rescheduled_twice_at_once_moves_twice(student: Any, course: Course) -> None:
    available_trainer("Ada", 5)
    purchase = buy(student, course, "pay_1")
    cause = Cause(actor="test", correlation_id="pay_1")
    trainer_allocate(purchase_id=purchase.pk, cause=cause)
    first, *_ = sessions_generate(purchase_id=purchase.pk, cause=cause)

    results = all_at_once(lambda _: session_reschedule(session_id=first.pk, actor="test"), [1, 2], workers=2)

    final = TrainingSession.objects.get(pk=first.pk)
    assert sorted(r.starts_at for r in results)[-1] == final.starts_at > first.starts_at
    events = list(OutboxEvent.objects.filter(type="session.rescheduled").order_by("seq"))
    assert len(events) == 2  # serialised on the row: the second moved from where the first left it
    assert events[1].payload["previous_starts_at"] == events[0].payload["session"]["starts_at"]
    assert overlaps() == 0
