"""The trace against real processes: a relay and a Celery worker deliver a manual fix; with the relay
stopped, the trace says so; with a relay back, the chain completes. Nothing here runs eagerly."""

import signal
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import F

from allocation.models import Trainer
from backoffice.trace import payment_trace
from flows.refunds import purchase_refund
from outbox.models import Delivery, RelayHeartbeat
from purchases.models import Course
from tests.support.processes import Processes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def command(*args: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def delivered(payment_id: str, events: int) -> bool:
    trace = payment_trace(payment_id=payment_id)
    return trace is not None and len(trace.events) == events and trace.verdict.state == "delivered"


def let_time_pass(seconds: int) -> None:
    """Move every recorded moment back, as if `seconds` had passed since."""
    shift = timedelta(seconds=seconds)
    Delivery.objects.update(
        created_at=F("created_at") - shift,
        available_at=F("available_at") - shift,
        claimed_at=F("claimed_at") - shift,
        done_at=F("done_at") - shift,
    )
    RelayHeartbeat.objects.update(beat_at=F("beat_at") - shift, started_at=F("started_at") - shift)


def test_trace_and_status_follow_real_relay_and_worker_processes(
    student: Any, course: Course, trainer: Trainer, processes: Processes
) -> None:
    processes.worker()
    relay = processes.relay()
    command("fix_purchase", "pay_live", "--student", student.pk, "--course", course.pk)
    wait_until(lambda: delivered("pay_live", 3), timeout=30, what="the manual fix's chain to be delivered")
    text = command("trace", "pay_live")
    assert text.count("[done     ]") == 5 and f"claimed by {RelayHeartbeat.objects.get().relay_id}" in text
    assert "Verdict: OK: Everything delivered" in text
    assert "alive, last beat" in command("outbox", "status")

    relay.send_signal(signal.SIGTERM)
    relay.wait(timeout=10)
    purchase_refund(payment_id="pay_live", actor="command:test")  # joins the chain, nobody delivers it
    let_time_pass(60)
    beat = RelayHeartbeat.objects.get()
    verdict = command("trace", "pay_live").splitlines()[-1]
    assert verdict.startswith(
        "Verdict: STUCK: #4 purchase.refunded -> realtime (cache invalidation + push to the app): pending for 1m 00s "
        "and no relay has claimed anything since the last claim 1m "
    ), verdict
    assert "ago: is `manage.py run_relay` running? (last relay heartbeat 1m " in verdict, verdict
    assert verdict.endswith(f"s ago from {beat.relay_id})"), verdict
    assert "no relay is alive: is `manage.py run_relay` running?" in command("outbox", "status")

    processes.relay("relay-2")
    wait_until(lambda: delivered("pay_live", 5), timeout=30, what="the refund to be delivered by the new relay")
    assert command("trace", "pay_live").splitlines()[-1] == (
        "Verdict: OK: Everything delivered: the student's cached views were invalidated and their app was pushed "
        "all 5 event(s), up to #5 sessions.cancelled; the purchase is refunded and its future sessions cancelled."
    )
