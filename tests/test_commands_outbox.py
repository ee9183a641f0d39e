"""`manage.py outbox status | retry | purge`: lag and backlog per sink from open deliveries only, requeue
of dead (and failing) deliveries, and retention that keeps what dedupe and diagnosis need."""

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from allocation.models import Trainer
from outbox import operations
from outbox.models import Delivery, InboxEntry, OutboxEvent
from outbox.testing import deliver_pending
from purchases.models import Course
from tests.support.purchases import buy

pytestmark = pytest.mark.django_db(transaction=True)


def outbox(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("outbox", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def dead_letter(student: Any, course: Course, payment_id: str, monkeypatch: pytest.MonkeyPatch) -> Delivery:
    """A purchase whose allocation handler failed for good."""
    from allocation import services

    real = services.trainer_allocate

    def broken(*, purchase_id: int, cause: Any) -> Any:
        if cause.correlation_id == payment_id:
            raise RuntimeError("no trainers today")
        return real(purchase_id=purchase_id, cause=cause)

    monkeypatch.setattr(services, "trainer_allocate", broken)
    buy(student, course, payment_id, actor="t")
    with override_settings(OUTBOX_MAX_ATTEMPTS=1):
        deliver_pending()
    return Delivery.objects.get(sink="allocation.allocate_trainer", event__correlation_id=payment_id)


def test_status_shows_lag_and_open_deliveries_per_sink(
    make_student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = dead_letter(make_student(), course, "pay_dead", monkeypatch)
    assert dead.status == "dead"
    waiting = make_student()
    buy(waiting, course, "pay_waiting", actor="t")  # no relay runs: due, unclaimed
    Delivery.objects.filter(event__correlation_id="pay_waiting").update(
        available_at=timezone.now() - timedelta(seconds=42)
    )

    text, _ = outbox("status")
    lines = {line.split()[0]: line.split() for line in text.splitlines()[1:] if line.strip()}
    assert lines["realtime"][1:] == ["42s", "1", "0", "0", "0", "0"]
    assert lines["allocation.allocate_trainer"][1:] == ["42s", "1", "0", "0", "0", "1"]
    assert lines["sessions.generate"][1:] == ["0s", "0", "0", "0", "0", "0"]  # registered sinks always listed
    assert "1 dead-lettered" in text

    data = json.loads(outbox("status", "--json")[0])
    by_sink = {row["sink"]: row for row in data["sinks"]}
    assert by_sink["allocation.allocate_trainer"]["dead"] == 1
    assert 42 <= by_sink["realtime"]["lag_seconds"] < 50


def test_status_reads_open_deliveries_through_the_partial_index(student: Any, course: Course) -> None:
    buy(student, course, "pay_1", actor="t")
    with CaptureQueriesContext(connection) as queries:
        operations.outbox_status()
    (grouped,) = [q["sql"] for q in queries if "outbox_delivery" in q["sql"]]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # what the planner does once history is large
        cursor.execute(f"EXPLAIN {grouped}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "outbox_delivery_open_idx" in plan, plan


def test_retry_requeues_a_dead_delivery_and_the_chain_completes(
    student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = dead_letter(student, course, "pay_dead", monkeypatch)
    monkeypatch.undo()
    out, err = outbox("retry", "--id", str(dead.pk))
    assert "requeued 1 deliveries" in out and "requeue" in err  # progress on stderr
    dead.refresh_from_db()
    assert (dead.status, dead.attempts) == ("pending", 0)
    assert dead.available_at <= timezone.now()
    deliver_pending()
    assert OutboxEvent.objects.filter(correlation_id="pay_dead").count() == 3
    _, err = outbox("retry", "--id", str(dead.pk))  # done now: nothing to retry
    assert f"not requeued (done or in flight, nothing to retry): {dead.pk}" in err


def test_retry_filters_by_sink_and_student_and_optionally_takes_failing_ones(
    make_student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_student(), make_student()
    dead_one = dead_letter(first, course, "pay_one", monkeypatch)
    dead_two = dead_letter(second, course, "pay_two", monkeypatch)
    failing = Delivery.objects.filter(sink="realtime", event__correlation_id="pay_two")
    failing.update(
        status="pending",
        attempts=2,
        last_error="realtime: ConnectionError()",
        available_at=timezone.now() + timedelta(hours=1),
    )

    assert "requeued 0" in outbox("retry", "--sink", "realtime")[0]  # only dead ones by default
    assert "requeued 1" in outbox("retry", "--student", str(first.pk))[0]
    dead_one.refresh_from_db()
    dead_two.refresh_from_db()
    assert (dead_one.status, dead_two.status) == ("pending", "dead")
    assert "requeued 2" in outbox("retry", "--student", str(second.pk), "--failing")[0]
    assert set(
        Delivery.objects.filter(event__correlation_id="pay_two").exclude(status="done").values_list("status", flat=True)
    ) == {"pending"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["retry", "--id", "987654"], "no delivery with id 987654; nothing was requeued"),
        (["retry", "--id", "0"], "'0' is not a positive integer"),
        (["retry", "--sink", "nope"], "unknown sink 'nope'; known: allocation.allocate_trainer"),
        (["retry", "--student", "987654"], "unknown student 987654"),
        (["purge", "--older-than", "a week"], "invalid duration 'a week'"),
        (["purge", "--older-than", "7"], "invalid duration '7': give a unit, e.g. 90s, 30m, 12h, 7d, 2w"),
        (["status", "--max-lag", "60"], "invalid duration '60'"),
        (["purge", "--batch-size", "-5"], "'-5' is not a positive integer"),
        (["explode"], "invalid choice: 'explode'"),
        ([], "the following arguments are required: status|retry|purge"),
    ],
)
def test_bad_arguments_raise_command_error(db: None, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("|", r"\|")):
        outbox(*args)


def test_purge_deletes_old_delivered_chains_in_batches_and_keeps_open_ones(
    make_student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    students = [make_student() for _ in range(3)]
    for i, s in enumerate(students):
        buy(s, course, f"pay_old_{i}", actor="t")
    deliver_pending()
    dead_letter(make_student(), course, "pay_stuck", monkeypatch)  # an open chain
    old = timezone.now() - timedelta(days=8)
    OutboxEvent.objects.update(created_at=old)
    buy(make_student(), course, "pay_recent")  # delivered below, but young
    deliver_pending()
    assert InboxEntry.objects.count() == 3 * 2 + 2  # old chains, recent chain (the failed attempt left none)

    out, _ = outbox("purge", "--dry-run", "--batch-size", "2")
    # The dry run counts exactly what the purge then deletes, deliveries and inbox entries included.
    assert out.startswith("would delete 9 delivered events older than 7d 0h (of 13 scanned; 15 deliveries, 6 inbox")
    assert OutboxEvent.objects.count() == 3 * 3 + 1 + 3

    out, err = outbox("purge", "--batch-size", "2")
    assert out.startswith("deleted 9 delivered events older than 7d 0h (of 13 scanned; 15 deliveries, 6 inbox entries)")
    assert "purge: scanned" in err
    remaining = set(OutboxEvent.objects.values_list("correlation_id", flat=True))
    assert remaining == {"pay_stuck", "pay_recent"}  # the old stuck chain stays whole, for retry and trace
    assert InboxEntry.objects.count() == 2
    assert not Delivery.objects.filter(event__correlation_id__startswith="pay_old").exists()
    # Seqs continue after a purge: the per-student counters are untouched.
    buy(students[0], course, "pay_after_purge", actor="t")
    assert OutboxEvent.objects.get(correlation_id="pay_after_purge").seq == 4
