"""Scheduling through the chain: the student's reschedule API and time zone, allocation that looks
at free slots, the waitlist with its reason, and refunds that free slots for the waitlist."""

from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from allocation.services import trainer_allocate
from flows.refunds import purchase_refund
from outbox.models import OutboxEvent
from outbox.services import Cause
from outbox.testing import deliver_pending
from purchases.models import Course, Purchase
from sessions_app.models import TrainingSession
from sessions_app.services import sessions_generate
from tests.support.purchases import buy
from tests.support.trainers import available_trainer

pytestmark = pytest.mark.django_db(transaction=True)
MONDAY_10 = [(0, time(10), time(11))]  # one one-hour slot a week


def auth(student: Any) -> dict[str, str]:
    return {"Authorization": f"Token {student.auth_token.key}"}


def one_session_course() -> Course:
    return Course.objects.create(title="Single", sessions_count=1, session_minutes=60, price=Decimal("10"))


def scheduled(student: Any, course: Course, payment_id: str) -> Purchase:
    purchase = buy(student, course, payment_id)
    cause = Cause(actor="test", correlation_id=payment_id)
    trainer_allocate(purchase_id=purchase.pk, cause=cause)
    sessions_generate(purchase_id=purchase.pk, cause=cause)
    purchase.refresh_from_db()
    return purchase


def reschedule(client: Client, student: Any, session_id: int) -> Any:
    return client.post(f"/api/v1/me/sessions/{session_id}/reschedule", headers=auth(student))


def test_the_student_moves_a_session_and_the_dashboard_follows(client: Client, student: Any, course: Course) -> None:
    available_trainer("Ada", 3, tz="Europe/Berlin", windows=[(d, time(9), time(12)) for d in range(5)])
    purchase = scheduled(student, course, "pay_1")
    deliver_pending()
    first = purchase.sessions.order_by("number").first()
    assert first is not None
    client.get("/api/v1/me/dashboard", headers=auth(student))  # cached now

    response = reschedule(client, student, first.pk)

    assert response.status_code == 200, response.content
    body = response.json()
    new_start = datetime.fromisoformat(body["starts_at"])
    assert body["starts_at"].endswith("+00:00") and new_start > first.starts_at
    assert body["id"] == first.pk and body["status"] == "scheduled" and body["purchase_id"] == purchase.pk
    event = OutboxEvent.objects.get(type="session.rescheduled")
    assert event.correlation_id == "pay_1" and event.actor == f"student:{student.pk}"
    assert event.payload["session"]["starts_at"] == body["starts_at"]
    assert event.payload["previous_starts_at"] == first.starts_at.astimezone(UTC).isoformat()
    deliver_pending()  # the relay invalidates the cached dashboard before it pushes the event
    dashboard = client.get("/api/v1/me/dashboard", headers=auth(student)).json()
    assert dashboard["seq"] == event.seq
    (shown,) = [s for s in dashboard["purchases"][0]["sessions"] if s["id"] == first.pk]
    assert shown["starts_at"] == body["starts_at"] and shown["ends_at"] == body["ends_at"]


def test_reschedule_errors_are_in_the_one_error_shape(
    client: Client, make_student: Any, course: Course, settings: Any
) -> None:
    settings.SCHEDULING_HORIZON_WEEKS = 2  # two Mondays
    single = one_session_course()
    available_trainer("Ada", 5, windows=MONDAY_10)
    alice, bob = make_student(), make_student()
    first = scheduled(alice, single, "pay_a").sessions.get()
    scheduled(bob, single, "pay_b")  # takes the other Monday: nothing is free after alice's

    assert reschedule(client, bob, first.pk).status_code == 404  # not bob's session
    assert reschedule(client, alice, 2**63).json()["error"]["code"] == "not_found"
    full = reschedule(client, alice, first.pk)
    assert full.status_code == 409
    assert full.json()["error"]["code"] == "no_free_slot"
    assert set(full.json()["error"]) == {"code", "message", "details"}
    assert reschedule(client, alice, first.pk).status_code == 409  # nothing changed, nothing emitted
    assert not OutboxEvent.objects.filter(type="session.rescheduled").exists()

    purchase_refund(payment_id="pay_a", actor="test")
    cancelled = reschedule(client, alice, first.pk)
    assert cancelled.status_code == 409 and cancelled.json()["error"]["code"] == "session_not_reschedulable"
    assert client.post(f"/api/v1/me/sessions/{first.pk}/reschedule").status_code == 401


def test_the_operator_command_moves_a_session(student: Any, capsys: pytest.CaptureFixture[str]) -> None:
    available_trainer("Ada", 5, windows=MONDAY_10)
    session = scheduled(student, one_session_course(), "pay_1").sessions.get()
    call_command("reschedule_session", str(session.pk), "--json")
    moved = TrainingSession.objects.get(pk=session.pk)
    assert (moved.starts_at - session.starts_at).days == 7
    assert OutboxEvent.objects.get(type="session.rescheduled").actor == "command:reschedule_session"
    assert moved.starts_at.isoformat() in capsys.readouterr().out
    with pytest.raises(CommandError, match="not_found"):
        call_command("reschedule_session", "999999")


def test_a_trainer_with_places_but_no_free_slot_is_not_chosen(make_student: Any, settings: Any) -> None:
    settings.SCHEDULING_HORIZON_WEEKS = 2  # two Mondays
    single = one_session_course()
    tight = available_trainer("Tight", 5, windows=MONDAY_10)  # two free Mondays within the horizon
    a, b, c = (scheduled(make_student(), single, f"pay_{n}") for n in "abc")
    assert {a.status, b.status} == {"active"} and a.allocation.trainer == b.allocation.trainer == tight
    assert c.status == "waitlisted"
    waitlisted = OutboxEvent.objects.get(type="allocation.waitlisted")
    assert waitlisted.payload["reason"] == "no_free_slot"
    tight.refresh_from_db()
    assert tight.active_count == 2  # it still has places: the slots decided

    roomy = available_trainer("Roomy", 1)  # a place and slots: the next purchase goes there
    d = scheduled(make_student(), single, "pay_d")
    assert d.status == "active" and d.allocation.trainer == roomy

    # The refund frees a's slot at once, and the waitlisted purchase gets it.
    purchase_refund(payment_id="pay_a", actor="test")
    assert not a.sessions.filter(status="scheduled").exists()
    deliver_pending()
    c.refresh_from_db()
    assert c.status == "active" and c.allocation.trainer == tight
    assert c.sessions.get().starts_at == a.sessions.get().starts_at


def test_the_student_sets_a_time_zone(client: Client, student: Any) -> None:
    assert client.get("/api/v1/me/profile", headers=auth(student)).json() == {"timezone": None}
    client.get("/api/v1/me/dashboard", headers=auth(student))  # cached now
    response = client.patch(
        "/api/v1/me/profile",
        data={"timezone": "America/New_York"},
        content_type="application/json",
        headers=auth(student),
    )
    assert response.status_code == 200 and response.json() == {"timezone": "America/New_York"}
    assert OutboxEvent.objects.filter(type="student.resync_requested", student_id=student.pk).count() == 1
    deliver_pending()
    assert client.get("/api/v1/me/dashboard", headers=auth(student)).json()["student"]["timezone"] == "America/New_York"

    bad = client.patch(
        "/api/v1/me/profile", data={"timezone": "Mars/Olympus"}, content_type="application/json", headers=auth(student)
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_timezone"
    cleared = client.patch(
        "/api/v1/me/profile", data={"timezone": None}, content_type="application/json", headers=auth(student)
    )
    assert cleared.json() == {"timezone": None}
    same = client.patch("/api/v1/me/profile", data={}, content_type="application/json", headers=auth(student))
    assert same.status_code == 200
    assert OutboxEvent.objects.filter(type="student.resync_requested").count() == 2  # no change, no event


def test_slots_gone_between_allocation_and_scheduling_send_the_purchase_back_to_the_waitlist(
    make_student: Any, settings: Any
) -> None:
    settings.SCHEDULING_HORIZON_WEEKS = 2  # two Mondays
    single = one_session_course()
    tight = available_trainer("Tight", 5, windows=MONDAY_10)
    late = buy(make_student(), single, "pay_late")
    trainer_allocate(purchase_id=late.pk, cause=Cause(actor="test", correlation_id="pay_late"))
    scheduled(make_student(), single, "pay_x")  # both Mondays go before `late` is scheduled
    scheduled(make_student(), single, "pay_y")

    assert sessions_generate(purchase_id=late.pk, cause=Cause(actor="test", correlation_id="pay_late")) == []
    late.refresh_from_db()
    tight.refresh_from_db()
    assert late.status == "waitlisted" and late.allocation.released_at is not None
    assert tight.active_count == 2  # its place was given back
    reasons = OutboxEvent.objects.filter(type="allocation.waitlisted").values_list("payload__reason", flat=True)
    assert list(reasons) == ["no_free_slot"]

    purchase_refund(payment_id="pay_x", actor="test")  # frees a Monday: `late` is promoted into it
    deliver_pending()
    late.refresh_from_db()
    assert late.status == "active" and late.allocation.released_at is None
    assert late.sessions.filter(status="scheduled").count() == 1
