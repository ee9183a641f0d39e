"""Renaming a course or a trainer refreshes every affected student's app, through the relay."""

from typing import Any

import pytest
from django.test import Client

from allocation.models import Trainer
from allocation.services import CapacityBelowLoad, trainer_save
from outbox.models import OutboxEvent
from outbox.testing import deliver_outbox, deliver_pending
from purchases.models import Course
from purchases.services import course_save
from tests.support.purchases import buy

pytestmark = pytest.mark.django_db(transaction=True)


def dashboard(client: Client, student: Any) -> dict[str, Any]:
    return client.get("/api/v1/me/dashboard", headers={"Authorization": f"Token {student.auth_token.key}"}).json()


def test_a_course_rename_reaches_a_cached_dashboard(
    client: Client, student: Any, course: Course, trainer: Trainer
) -> None:
    with deliver_outbox():
        buy(student, course)
    assert dashboard(client, student)["purchases"][0]["course"]["title"] == course.title  # now cached
    course_save(course_id=course.pk, fields={"title": "Strength, renamed"}, actor="admin:op")
    assert OutboxEvent.objects.filter(type="student.resync_requested", student=student).count() == 1
    deliver_pending()
    assert dashboard(client, student)["purchases"][0]["course"]["title"] == "Strength, renamed"


def test_a_trainer_rename_reaches_a_cached_dashboard(
    client: Client, student: Any, course: Course, trainer: Trainer
) -> None:
    with deliver_outbox():
        buy(student, course)
    assert dashboard(client, student)["purchases"][0]["trainer"]["name"] == trainer.name
    trainer_save(trainer_id=trainer.pk, name="Ada Lovelace", capacity=trainer.capacity, actor="admin:op")
    deliver_pending()
    assert dashboard(client, student)["purchases"][0]["trainer"]["name"] == "Ada Lovelace"


def test_capacity_cannot_drop_below_the_active_purchases(student: Any, course: Course, trainer: Trainer) -> None:
    with deliver_outbox():
        buy(student, course)
    with pytest.raises(CapacityBelowLoad):
        trainer_save(trainer_id=trainer.pk, name=trainer.name, capacity=0, actor="admin:op")
    assert trainer_save(trainer_id=trainer.pk, name=trainer.name, capacity=1, actor="admin:op").capacity == 1
