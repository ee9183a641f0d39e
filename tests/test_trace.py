"""`manage.py trace <payment_id>`: the chain, each delivery's state, and a verdict that says why the app
did or did not update: healthy, a failing handler, a dead letter, no relay, a live lease, a blocked stream."""

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from allocation.models import Trainer
from backoffice.trace import payment_trace
from outbox import deliveries
from outbox.models import Delivery
from outbox.testing import deliver_outbox, deliver_pending
from purchases.models import Course
from tests.support.purchases import buy

pytestmark = pytest.mark.django_db(transaction=True)


def trace(payment_id: str) -> str:
    out = StringIO()
    call_command("trace", payment_id, stdout=out)
    return out.getvalue()


def verdict(payment_id: str) -> str:
    (line,) = [line for line in trace(payment_id).splitlines() if line.startswith("Verdict: ")]
    return line


@pytest.fixture
def failing_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    from sessions_app import services

    def generate(**kwargs: Any) -> None:
        raise RuntimeError("calendar service unavailable")

    monkeypatch.setattr(services, "sessions_generate", generate)


def test_a_healthy_chain(student: Any, course: Course, trainer: Trainer) -> None:
    with deliver_outbox():
        buy(student, course, "pay_ok", actor="command:fix_purchase")
    text = trace("pay_ok")
    assert text.startswith("Payment pay_ok: 3 event(s)")
    for expected in (
        "#1 purchase.created",
        "actor command:fix_purchase  caused by -",
        "#2 trainer.allocated",
        "actor handler:allocation.allocate_trainer  caused by #1 purchase.created",
        "#3 sessions.generated",
        "caused by #2 trainer.allocated",
        "-> realtime, attempts 1",
        "-> allocation.allocate_trainer, attempts 1",
        "-> sessions.generate, attempts 1",
    ):
        assert expected in text, expected
    assert text.count("[done     ]") == 5
    assert verdict("pay_ok") == (
        "Verdict: OK: Everything delivered: the student's cached views were invalidated and their app was pushed "
        "all 3 event(s), up to #3 sessions.generated; the purchase is active, its trainer allocated and its "
        "sessions scheduled."
    )


def test_a_chain_stuck_on_a_failing_handler(
    student: Any, course: Course, trainer: Trainer, failing_sessions: None
) -> None:
    buy(student, course, "pay_failing", actor="command:fix_purchase")
    with override_settings(OUTBOX_BACKOFF_BASE_SECONDS=20, OUTBOX_BACKOFF_MAX_SECONDS=20):
        deliver_pending()
    line = verdict("pay_failing")
    assert line.startswith(
        "Verdict: STUCK: #2 trainer.allocated -> sessions.generate failed once: "
        "RuntimeError: calendar service unavailable; next retry in "
    )
    seconds = float(line.rsplit(" ", 1)[1].rstrip("s"))
    assert 9 <= seconds <= 20  # backoff 20 s with jitter, minus the time spent
    assert "[pending  ]" in trace("pay_failing")


def test_a_dead_letter_names_the_retry_command_which_fixes_it(
    student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch, failing_sessions: None
) -> None:
    buy(student, course, "pay_dead", actor="command:fix_purchase")
    with override_settings(OUTBOX_MAX_ATTEMPTS=3, OUTBOX_BACKOFF_BASE_SECONDS=0, OUTBOX_BACKOFF_MAX_SECONDS=0):
        for _ in range(4):
            deliver_pending()
    dead = Delivery.objects.get(sink="sessions.generate")
    assert dead.status == "dead"
    assert verdict("pay_dead") == (
        "Verdict: STUCK: #2 trainer.allocated -> dead-lettered: sessions.generate failed 3 times: "
        "RuntimeError: calendar service unavailable. Fix the cause, then run "
        f"`manage.py outbox retry --id {dead.pk}`"
    )
    monkeypatch.undo()  # the cause is fixed
    call_command("outbox", "retry", "--id", str(dead.pk), stdout=StringIO(), stderr=StringIO())
    deliver_pending()
    assert verdict("pay_dead").startswith("Verdict: OK: Everything delivered")


def test_a_chain_whose_relay_is_not_running(student: Any, course: Course) -> None:
    buy(student, course, "pay_norelay", actor="command:fix_purchase")  # emitted, nothing claimed
    fresh = verdict("pay_norelay")
    assert fresh.startswith("Verdict: IN PROGRESS: #1 purchase.created -> realtime (cache invalidation + push")
    assert "no relay has claimed anything since it was emitted" in fresh

    Delivery.objects.update(available_at=timezone.now() - timedelta(seconds=40))
    text = trace("pay_norelay")
    assert text.count("[pending  ]") == 2
    assert text.splitlines()[-1] == (
        "Verdict: STUCK: #1 purchase.created -> realtime (cache invalidation + push to the app): pending for 40s "
        "and no relay has claimed anything since it was emitted: is `manage.py run_relay` running? "
        "(no relay heartbeat on record)"
    )


def test_a_delivery_in_flight_shows_its_relay_and_lease(student: Any, course: Course) -> None:
    buy(student, course, "pay_flight", actor="command:fix_purchase")
    deliveries.claim(relay_id="relay-7:123", limit=10)  # claimed, not settled yet
    line = verdict("pay_flight")
    assert line.startswith(
        "Verdict: IN PROGRESS: #1 purchase.created -> realtime (cache invalidation + push to the app): "
        "in flight on relay relay-7:123, lease expires in "
    )

    Delivery.objects.update(available_at=timezone.now() - timedelta(seconds=90))  # the relay died
    expired = verdict("pay_flight")
    assert expired.startswith("Verdict: STUCK:")
    assert "but its lease expired 1m 30s ago (the relay died mid-delivery?)" in expired


def test_a_chain_waiting_behind_another_payment_of_the_same_student(
    student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from allocation import services

    real = services.trainer_allocate

    def allocate(*, purchase_id: int, cause: Any) -> Any:
        if cause.correlation_id == "pay_poison":
            raise RuntimeError("boom")
        return real(purchase_id=purchase_id, cause=cause)

    monkeypatch.setattr(services, "trainer_allocate", allocate)
    buy(student, course, "pay_poison", actor="command:fix_purchase")
    buy(student, course, "pay_behind", actor="command:fix_purchase")
    with override_settings(OUTBOX_MAX_ATTEMPTS=2, OUTBOX_BACKOFF_BASE_SECONDS=0, OUTBOX_BACKOFF_MAX_SECONDS=0):
        for _ in range(4):
            deliver_pending()
    poison = Delivery.objects.get(sink="allocation.allocate_trainer", event__correlation_id="pay_poison")
    assert verdict("pay_behind") == (
        "Verdict: STUCK: #2 purchase.created -> allocation.allocate_trainer: waiting behind this student's "
        "#1 purchase.created, payment pay_poison (per-student order), which is: dead-lettered: "
        "allocation.allocate_trainer failed 2 times: RuntimeError: boom. Fix the cause, then run "
        f"`manage.py outbox retry --id {poison.pk}`"
    )


def test_json_output_and_unknown_payments(student: Any, course: Course, trainer: Trainer) -> None:
    with deliver_outbox():
        buy(student, course, "pay_json", actor="command:fix_purchase")
    out = StringIO()
    call_command("trace", "pay_json", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["verdict"]["state"] == "delivered"
    assert [e["type"] for e in data["events"]] == ["purchase.created", "trainer.allocated", "sessions.generated"]
    assert {d["status"] for e in data["events"] for d in e["deliveries"]} == {"done"}
    # The fields and their order are the command's output (backoffice.trace.trace_json).
    assert list(data) == ["payment_id", "verdict", "events", "provider_events"]
    assert list(data["verdict"]) == ["state", "message"]
    assert list(data["events"][0]) == [
        "id", "seq", "type", "actor", "student_id", "causation_id", "created_at", "deliveries"
    ]  # fmt: skip
    assert list(data["events"][0]["deliveries"][0]) == [
        "id", "sink", "status", "attempts", "last_error", "available_at", "claimed_by", "done_at", "state", "note"
    ]  # fmt: skip
    assert isinstance(data["events"][0]["id"], str) and data["events"][1]["causation_id"] == data["events"][0]["id"]
    with pytest.raises(CommandError, match="no events for payment 'pay_nope': unknown payment id"):
        trace("pay_nope")
    assert payment_trace(payment_id="pay_nope") is None
