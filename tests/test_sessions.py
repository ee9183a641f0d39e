"""Sessions: weekly schedule from the course, idempotent generation."""

import datetime as dt
import itertools
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from allocation.models import Allocation, Trainer
from allocation.selectors import earliest_start, free_series
from allocation.services import availability_replace, trainer_allocate
from outbox.models import OutboxEvent
from outbox.services import Cause
from purchases.models import Course
from sessions_app.models import TrainingSession
from sessions_app.services import sessions_cancel, sessions_generate
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


def _allocated(student: Any, course: Course, payment: str) -> tuple[int, Allocation]:
    purchase = buy(student, course, payment)
    allocation = trainer_allocate(purchase_id=purchase.pk, cause=Cause(actor="test", correlation_id=payment))
    assert allocation is not None and allocation.proposed_start is not None
    return purchase.pk, allocation


def _generate(purchase_id: int) -> tuple[list[TrainingSession], list[str]]:
    """The sessions, and the statements that placed them."""
    with CaptureQueriesContext(connection) as captured:
        sessions = sessions_generate(purchase_id=purchase_id, cause=Cause(actor="test", correlation_id="gen"))
    return sessions, [q["sql"] for q in captured.captured_queries]


def test_the_series_allocation_proposed_is_placed_after_one_read_of_its_weeks(
    student: Any, course: Course, trainer: Trainer
) -> None:
    purchase_id, allocation = _allocated(student, course, "pay_1")
    sessions, statements = _generate(purchase_id)
    assert sessions[0].starts_at == allocation.proposed_start
    assert len(sessions) == course.sessions_count
    assert sum("allocation_availabilitywindow" in sql for sql in statements) == 1  # one calendar read


def test_a_proposal_taken_meanwhile_gives_the_earliest_free_series(
    student: Any, make_student: Any, course: Course, trainer: Trainer
) -> None:
    """Two purchases allocated to one trainer before either has sessions are proposed the same series:
    the second, finding it taken, gets the earliest free one (one more calendar read)."""
    first_id, first = _allocated(student, course, "pay_1")
    second_id, second = _allocated(make_student(), course, "pay_2")
    assert first.trainer_id == second.trainer_id and first.proposed_start == second.proposed_start
    taken, _ = _generate(first_id)
    expected = free_series(
        trainer_id=trainer.pk, count=course.sessions_count, minutes=course.session_minutes, earliest=earliest_start()
    )
    placed, statements = _generate(second_id)
    assert expected is not None and [(s.starts_at, s.ends_at) for s in placed] == expected
    assert placed[0].starts_at != taken[0].starts_at
    assert sum("allocation_availabilitywindow" in sql for sql in statements) == 2


def test_a_proposal_no_longer_after_the_lead_time_is_not_used(
    student: Any, course: Course, trainer: Trainer, settings: Any
) -> None:
    purchase_id, allocation = _allocated(student, course, "pay_1")
    settings.SCHEDULING_LEAD_HOURS += 24 * 3  # the worker was behind for three days
    sessions, _ = _generate(purchase_id)
    assert allocation.proposed_start is not None
    assert sessions[0].starts_at >= earliest_start() > allocation.proposed_start


def test_a_proposal_outside_the_availability_changed_since_is_not_used(
    student: Any, course: Course, trainer: Trainer
) -> None:
    purchase_id, allocation = _allocated(student, course, "pay_1")
    assert allocation.proposed_start is not None
    other_day = (allocation.proposed_start.weekday() + 1) % 7  # the trainer's zone is UTC
    availability_replace(trainer_id=trainer.pk, windows=[(other_day, dt.time(0), dt.time(0))])
    sessions, _ = _generate(purchase_id)
    assert {s.starts_at.weekday() for s in sessions} == {other_day}


def test_the_proposal_stands_when_an_earlier_series_frees_up_meanwhile(
    student: Any, make_student: Any, course: Course, trainer: Trainer
) -> None:
    """Only the proposal's weeks are read: a series freed before it since (a refund) is not looked for.
    The proposal is still a valid place, in the availability and free."""
    first_id, _ = _allocated(student, course, "pay_1")
    freed, _ = _generate(first_id)
    second_id, second = _allocated(make_student(), course, "pay_2")
    assert second.proposed_start is not None and second.proposed_start > freed[0].starts_at
    sessions_cancel(purchase_id=first_id, cause=Cause(actor="test", correlation_id="refund"))
    placed, _ = _generate(second_id)
    assert placed[0].starts_at == second.proposed_start
