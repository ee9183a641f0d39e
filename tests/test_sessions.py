"""Sessions: weekly schedule from the course, idempotent generation."""

import itertools
from datetime import timedelta
from typing import Any

import pytest

from allocation.models import Trainer
from allocation.services import trainer_allocate
from outbox.models import OutboxEvent
from outbox.services import Cause
from purchases.models import Course
from sessions_app.models import TrainingSession
from sessions_app.services import sessions_generate
from tests.support.purchases import buy

pytestmark = pytest.mark.django_db(transaction=True)


def test_sessions_are_weekly_and_generated_once(student: Any, course: Course, trainer: Trainer) -> None:
    purchase = buy(student, course, "pay_1")
    cause = Cause(actor="test", correlation_id="pay_1")
    trainer_allocate(purchase_id=purchase.pk, cause=cause)
    sessions = sessions_generate(purchase_id=purchase.pk, cause=cause)
    assert len(sessions) == course.sessions_count
    starts = [s.starts_at for s in sessions]
    assert all(b - a == timedelta(weeks=1) for a, b in itertools.pairwise(starts))
    assert {s.trainer_id for s in sessions} == {trainer.pk}
    assert sessions_generate(purchase_id=purchase.pk, cause=cause) == sessions
    assert TrainingSession.objects.count() == course.sessions_count
    assert OutboxEvent.objects.filter(type="sessions.generated").count() == 1


def test_no_sessions_without_a_trainer(student: Any, course: Course) -> None:
    purchase = buy(student, course, "pay_1")
    assert sessions_generate(purchase_id=purchase.pk, cause=Cause(actor="test", correlation_id="pay_1")) == []
    assert not OutboxEvent.objects.filter(type="sessions.generated").exists()
