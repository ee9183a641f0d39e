"""Availability and reschedules in the real admin (logged-in superuser, real forms and actions),
through the services; the demo seed's trainers in two time zones, idempotent; and the operator's
command that resolves double bookings left by the old scheduling."""

from datetime import time
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from allocation.models import AvailabilityWindow, Trainer
from flows import demo
from outbox.models import OutboxEvent
from outbox.services import Cause, emit
from purchases.models import Course, Purchase
from sessions_app.models import TrainingSession
from tests.support.purchases import buy
from tests.support.trainers import availability_form, available_trainer, overlapping_sessions
from tests.test_sched_api import scheduled

pytestmark = pytest.mark.django_db(transaction=True)


def windows(trainer: Trainer) -> list[tuple[int, time, time]]:
    return list(trainer.availability.order_by("weekday", "starts").values_list("weekday", "starts", "ends"))


def test_the_operator_edits_zone_and_availability(ops: Client) -> None:
    trainer = available_trainer("Ada", 2, windows=[(0, time(9), time(12))])
    url = reverse("admin:allocation_trainer_change", args=[trainer.pk])
    page = ops.get(url).text
    assert "Weekly availability" in page and 'name="timezone"' in page

    new = [(0, "08:00", "10:00"), (0, "14:00", "18:00"), (5, "20:00", "00:00")]
    form = {"name": "Ada", "capacity": 2, "timezone": "America/New_York", **availability_form(trainer, new)}
    assert ops.post(url, {**form, "_save": "Save"}).status_code == 302
    trainer.refresh_from_db()
    assert trainer.timezone == "America/New_York"
    assert windows(trainer) == [(0, time(8), time(10)), (0, time(14), time(18)), (5, time(20), time(0))]

    overlapping = [(2, "08:00", "12:00"), (2, "11:00", "13:00")]
    refused = ops.post(url, {**form, **availability_form(trainer, overlapping), "_save": "Save"})
    assert refused.status_code == 200 and "overlap" in refused.text
    unknown = ops.post(url, {**form, "timezone": "Mars/Olympus", "_save": "Save"})
    assert unknown.status_code == 200 and "IANA" in unknown.text
    trainer.refresh_from_db()
    assert trainer.timezone == "America/New_York" and len(windows(trainer)) == 3  # nothing changed


@pytest.mark.parametrize(
    "row",
    [
        ("99", "09:00", "10:00"),  # weekday outside 0-6
        ("-1", "09:00", "10:00"),
        ("Monday", "09:00", "10:00"),
        ("1", "25:99", "99999999999999999999"),  # not times at all
        ("1", "", "10:00"),
        ("99999999999999999999999", "09:00\x00", "10:00"),
    ],
)
def test_a_malformed_availability_row_is_refused_on_the_form(ops: Client, row: tuple[str, str, str]) -> None:
    """A row the field validation refuses is shown as that row's error: the whole-formset check
    (overlaps) does not run on values that were never cleaned (it raised KeyError: a 500)."""
    trainer = available_trainer("Ada", 2, windows=[(0, time(9), time(12))])
    url = reverse("admin:allocation_trainer_change", args=[trainer.pk])
    form = {"name": "Ada", "capacity": 2, "timezone": "UTC", **availability_form(trainer, [(1, "09:00", "10:00")])}
    form.update(zip(["availability-0-weekday", "availability-0-starts", "availability-0-ends"], row, strict=True))
    refused = ops.post(url, {**form, "_save": "Save"})
    assert refused.status_code == 200 and "errorlist" in refused.text
    assert windows(trainer) == [(0, time(9), time(12))]  # nothing changed


def test_the_operator_moves_a_session_with_the_admin_action(ops: Client, student: Any, course: Course) -> None:
    available_trainer("Ada", 2)
    session = scheduled(student, course, "pay_1").sessions.order_by("number").first()
    assert session is not None
    response = ops.post(
        reverse("admin:sessions_app_trainingsession_changelist"),
        {"action": "reschedule", "_selected_action": [session.pk]},
        follow=True,
    )
    assert "moved to" in response.text
    moved = TrainingSession.objects.get(pk=session.pk)
    assert moved.starts_at > session.starts_at
    assert OutboxEvent.objects.get(type="session.rescheduled").actor == "admin:ops"


def test_seed_demo_gives_trainers_availability_in_two_zones_once(db: None) -> None:
    call_command("seed_demo")
    trainers = {t.name: t for t in Trainer.objects.all()}
    assert {t.timezone for t in trainers.values()} == {"Europe/Berlin", "America/New_York"}
    assert all(t.availability.exists() for t in trainers.values())
    before = list(AvailabilityWindow.objects.order_by("id").values_list("id", flat=True))
    assert demo.seed_demo()["trainers"][1]["timezone"] == "America/New_York"
    call_command("seed_demo")
    assert list(AvailabilityWindow.objects.order_by("id").values_list("id", flat=True)) == before  # nothing added


def test_resolve_overlaps_moves_double_booked_sessions_before_the_constraint(student: Any, course: Course) -> None:
    """As on a database the old placeholder scheduling double-booked, before migration 0004."""
    trainer = available_trainer("Ada", 5)
    first = scheduled(student, course, "pay_1").sessions.order_by("number").first()
    assert first is not None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'session_trainer_no_overlap'"
        )
        (definition,) = cursor.fetchone() or ("",)
        cursor.execute("ALTER TABLE sessions_app_trainingsession DROP CONSTRAINT session_trainer_no_overlap")
    try:
        other = buy(student, course, "pay_2")
        with transaction.atomic(), connection.cursor() as cursor:  # the old code's double booking, with its event
            cursor.execute(
                "INSERT INTO sessions_app_trainingsession (purchase_id, trainer_id, number, starts_at, ends_at, "
                "duration_minutes, status) VALUES (%s, %s, 1, %s, %s, 60, 'scheduled') RETURNING id",
                [other.pk, trainer.pk, first.starts_at, first.ends_at],
            )
            (double,) = cursor.fetchone() or (0,)
            Purchase.objects.filter(pk=other.pk).update(status="active")
            emit(
                type="sessions.generated",
                student_id=student.pk,
                aggregate_type="purchase",
                aggregate_id=other.pk,
                payload={},
                cause=Cause(actor="test", correlation_id="pay_2"),
            )
        assert overlapping_sessions() == 1

        call_command("resolve_overlaps")

        assert overlapping_sessions() == 0
        assert TrainingSession.objects.get(pk=double).starts_at > first.starts_at  # the later one moved
        assert TrainingSession.objects.get(pk=first.pk).starts_at == first.starts_at
        assert OutboxEvent.objects.get(type="session.rescheduled").actor == "command:resolve_overlaps"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER TABLE sessions_app_trainingsession ADD CONSTRAINT session_trainer_no_overlap {definition}"
            )
