"""The relay in-process (Celery tasks run eagerly): order, invalidation before push, inbox, retries."""

import itertools
import re
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings

from allocation.models import Allocation, Trainer
from outbox import deliveries, operations, relay_statements
from outbox.deliveries import PARKED_UNTIL
from outbox.models import Delivery, InboxEntry, OutboxEvent, new_event_id
from outbox.relay import Relay
from purchases.models import Course
from realtime.testing import GroupListener
from tests.support.purchases import buy
from tests.support.trainers import available_trainer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("eager_celery")]


def test_the_chain_is_delivered_in_order_with_causation(student: Any, course: Course, trainer: Trainer) -> None:
    buy(student, course, "pay_1")
    with GroupListener([student.pk]) as listener:
        Relay().drain()
        wait_until(lambda: len(listener.events[student.pk]) == 3, what="three pushed events")
    assert [e["type"] for e in listener.events[student.pk]] == [
        "purchase.created",
        "trainer.allocated",
        "sessions.generated",
    ]
    assert listener.seqs(student.pk) == [1, 2, 3]
    created, allocated, generated = OutboxEvent.objects.order_by("seq")
    assert {e.correlation_id for e in (created, allocated, generated)} == {"pay_1"}
    assert (created.causation_id, allocated.causation_id, generated.causation_id) == (None, created.id, allocated.id)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"done"}
    assert Delivery.objects.count() == 5  # realtime x3, allocation, sessions


def test_a_redelivered_event_has_no_second_effect(student: Any, course: Course, trainer: Trainer) -> None:
    buy(student, course, "pay_1")
    Relay().drain()
    # Simulate at-least-once: every handler delivery comes round again.
    Delivery.objects.exclude(sink="realtime").update(status="pending", available_at="2000-01-01T00:00Z")
    Relay().drain()
    assert Allocation.objects.count() == 1
    assert OutboxEvent.objects.count() == 3
    assert InboxEntry.objects.count() == 2
    trainer.refresh_from_db()
    assert trainer.active_count == 1


def test_per_student_order_holds_across_batches(make_student: Any, course: Course) -> None:
    available_trainer(name="Big", capacity=1000)
    students = [make_student() for _ in range(5)]
    for i in range(8):
        for s in students:
            buy(s, course, f"pay_{s.pk}_{i}")
    with GroupListener([s.pk for s in students]) as listener:
        relay = Relay(batch_size=7)  # small batches: streams are split across many claims
        while relay.drain():
            pass
        wait_until(lambda: listener.count() == 5 * 8 * 3, what="all pushes")
    for s in students:
        assert listener.seqs(s.pk) == list(range(1, 25))


def test_a_failing_handler_retries_then_dead_letters_without_blocking_others(
    make_student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from allocation import services

    poisoned, healthy = make_student(), make_student()
    real_allocate = services.trainer_allocate

    def allocate(*, purchase_id: int, cause: Any) -> Any:
        if cause.correlation_id == "pay_poison":
            raise RuntimeError("boom")
        return real_allocate(purchase_id=purchase_id, cause=cause)

    monkeypatch.setattr(services, "trainer_allocate", allocate)
    buy(poisoned, course, "pay_poison")
    buy(poisoned, course, "pay_after_poison")
    buy(healthy, course, "pay_ok")
    with override_settings(OUTBOX_MAX_ATTEMPTS=3, OUTBOX_BACKOFF_BASE_SECONDS=0, OUTBOX_BACKOFF_MAX_SECONDS=0):
        relay = Relay()
        for _ in range(6):
            relay.drain()
    poison = Delivery.objects.get(sink="allocation.allocate_trainer", event__correlation_id="pay_poison")
    assert poison.status == "dead" and poison.attempts == 3 and "boom" in poison.last_error
    # The healthy student's chain completed; the poisoned student's next event waits behind the dead one.
    assert Allocation.objects.filter(purchase__student=healthy).exists()
    behind = Delivery.objects.get(sink="allocation.allocate_trainer", event__correlation_id="pay_after_poison")
    assert behind.status == "pending" and behind.attempts == 0
    assert behind.available_at == PARKED_UNTIL  # parked: the relay's claim never scans it
    # The fix ships; the operator retries the dead letter, which releases the stream behind it.
    monkeypatch.setattr(services, "trainer_allocate", real_allocate)
    assert operations.deliveries_retry(sink="allocation.allocate_trainer").requeued == 1
    Relay().drain()
    assert Allocation.objects.filter(purchase__student=poisoned).count() == 2
    assert not Delivery.objects.exclude(status="done").exists()


def test_an_expired_lease_is_claimed_again(student: Any, course: Course, trainer: Trainer) -> None:
    buy(student, course, "pay_1")
    with override_settings(OUTBOX_LEASE_SECONDS=0.0, OUTBOX_HANDLER_LEASE_SECONDS=0.0):
        crashed = deliveries.claim(relay_id="crashed", limit=10)  # claimed, never settled
    assert {c.sink for c in crashed} == {"realtime", "allocation.allocate_trainer"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.01)")  # make sure now() moved past the zero-length lease
    Relay().drain()
    assert set(Delivery.objects.values_list("status", flat=True)) == {"done"}
    assert Delivery.objects.get(sink="realtime", seq=1).attempts == 2


def test_a_live_lease_is_not_claimed_twice(student: Any, course: Course) -> None:
    buy(student, course, "pay_1")
    buy(student, course, "pay_2")
    first = deliveries.claim(relay_id="a", limit=100)
    second = deliveries.claim(relay_id="b", limit=100)
    assert len(first) == 4 and second == []


def test_claims_and_settles_commit_without_waiting_for_the_disk_and_only_themselves(
    student: Any, course: Course
) -> None:
    """Their own transaction's COMMIT does not wait for the WAL flush (deliveries.RELAY_COMMIT); nothing
    else on the connection is affected, so a durable write after them still waits."""

    def synchronous_commit() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('synchronous_commit')")
            return str(cursor.fetchone()[0])

    buy(student, course, "pay_1")
    with transaction.atomic():  # to look inside the statement's transaction before it ends
        claimed = deliveries.claim(relay_id="a", limit=10)
        assert claimed and synchronous_commit() == "off"
    assert synchronous_commit() == "on"
    with transaction.atomic():
        deliveries.settle_done([c.id for c in claimed])
        assert synchronous_commit() == "off"
    assert synchronous_commit() == "on"
    assert set(Delivery.objects.filter(id__in=[c.id for c in claimed]).values_list("status", flat=True)) == {"done"}


def test_event_ids_are_uuid7_ordered_by_time(student: Any, course: Course, monkeypatch: pytest.MonkeyPatch) -> None:
    """Time-ordered ids keep the id-keyed indexes' inserts in one place (see new_event_id)."""
    buy(student, course, "pay_1")
    assert {e.id.version for e in OutboxEvent.objects.all()} == {7}
    batches = []
    for ms in (1_700_000_000_000, 1_700_000_000_001, 1_800_000_000_000):
        monkeypatch.setattr(time, "time_ns", lambda ms=ms: ms * 1_000_000 + 999_999)
        batches.append([new_event_id() for _ in range(50)])
    ids = [i for batch in batches for i in batch]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == len(ids)
    assert [{i.int >> 80 for i in batch} for batch in batches] == [
        {1_700_000_000_000},
        {1_700_000_000_001},
        {1_800_000_000_000},
    ]
    assert all(max(earlier) < min(later) for earlier, later in itertools.pairwise(batches))


def test_a_slow_batch_is_logged_with_where_its_time_went(
    student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from outbox.relay import slow_batches

    buy(student, course, "pay_1")
    monkeypatch.setattr(slow_batches, "SLOW_BATCH_SECONDS", 0.0)
    monkeypatch.setattr(slow_batches, "SLOW_BATCH_PER_DELIVERY", 0.0)
    relay_ = Relay()
    with caplog.at_level("WARNING", logger="outbox.relay"):
        assert relay_.step() == 2
        while relay_.step():  # the chain's later events, then an empty claim, which is timed too
            pass
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("slow batch")]
    first, empty = logged[0], logged[-1]
    assert re.fullmatch(r"slow batch: 2 deliveries in \d+ ms \(claim \d+ ms, realtime \d+ ms, handlers \d+ ms\)", first)
    assert re.fullmatch(r"slow batch: 0 deliveries in \d+ ms \(claim \d+ ms\)", empty)


def test_relays_are_woken_at_commit_by_emit_and_by_the_runner(student: Any, course: Course, trainer: Trainer) -> None:
    """emit() NOTIFYs with the event, and the runner with each settled handler delivery (the stream's
    next delivery is claimable then): without either, a relay would only find the work at its next poll."""
    import psycopg

    from outbox.relay.listen import conninfo
    from outbox.runner import run_handler_batch
    from outbox.services import NOTIFY_CHANNEL

    def wakes(listener: psycopg.Connection[Any]) -> int:
        return sum(1 for _ in listener.notifies(timeout=0.5, stop_after=1))

    with psycopg.connect(**conninfo(), autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        buy(student, course, "pay_wake")
        assert wakes(listener) == 1  # purchase.created committed
        allocation = Delivery.objects.get(sink="allocation.allocate_trainer")
        Delivery.objects.filter(sink="realtime").update(status="done")
        assert wakes(listener) == 0  # nothing else notifies
        run_handler_batch(sink=allocation.sink, delivery_ids=[allocation.pk])
        assert wakes(listener) == 1  # the handler's trainer.allocated and its settled delivery: one COMMIT
        allocation.refresh_from_db()
        assert allocation.status == "done"
        sessions = Delivery.objects.get(sink="sessions.generate")
        # A handler that emits nothing still wakes the relays when its delivery is settled.
        Delivery.objects.filter(pk=sessions.pk).update(status="pending")
        InboxEntry.objects.create(event_id=sessions.event_id, handler=sessions.sink)  # already applied
        run_handler_batch(sink=sessions.sink, delivery_ids=[sessions.pk])
        assert wakes(listener) == 1


def test_a_claim_took_all_only_if_no_stream_was_cut_at_its_share() -> None:
    def claimed(*streams: tuple[int, int]) -> list[deliveries.Claimed]:
        rows = []
        for student, count in streams:
            rows += [
                deliveries.Claimed(id=0, event_id="e", sink="realtime", student_id=student, seq=s, attempts=1)
                for s in range(1, count + 1)
            ]
        return rows

    assert deliveries.claim_took_all([], limit=10)
    assert deliveries.claim_took_all(claimed((1, 2), (2, 1)), limit=10)  # shares of 5: none reached
    assert not deliveries.claim_took_all(claimed((1, 5), (2, 1)), limit=10)  # stream 1 may have more
    assert not deliveries.claim_took_all(claimed((1, 4), (2, 4), (3, 2)), limit=10)  # the batch is full


def test_the_running_relay_stops_claiming_once_a_claim_took_all(
    make_student: Any, course: Course, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between NOTIFYs, a trickle costs one claim per wake, not two; a backlog cut at a stream's share
    still drains in one go."""
    students = [make_student() for _ in range(2)]
    calls: list[int] = []
    claim = deliveries.claim

    def counting_claim(**kwargs: Any) -> list[deliveries.Claimed]:
        result = claim(**kwargs)
        calls.append(len(result))
        return result

    monkeypatch.setattr(deliveries, "claim", counting_claim)
    Delivery.objects.all().delete()
    buy(students[0], course, "pay_trickle")
    Delivery.objects.exclude(sink="realtime").delete()  # the realtime sink alone: no eager chain
    assert Relay(batch_size=10).drain(until_notified=True) == 1
    assert calls == [1]

    calls.clear()
    for i in range(12):  # student 0: 11 events, student 1: 1; two streams, a share of 5 each
        buy(students[0] if i < 11 else students[1], course, f"pay_backlog_{i}")
    Delivery.objects.exclude(sink="realtime").delete()
    assert Relay(batch_size=10).drain(until_notified=True) == 12
    assert calls == [6, 6]  # student 0 cut at 5, so on; then the other 6 and no empty claim to confirm


def test_the_enqueued_tasks_args_text_is_celerys() -> None:
    """The relay writes the task's argsrepr header itself (Celery's saferepr was a tenth of an enqueue):
    the same text as Celery's for a batch, cut at Celery's limit for a long one."""
    from celery.utils.saferepr import saferepr

    from outbox.relay.loop import ARGS_REPR_MAXSIZE, _args_repr

    ids = [3, 1, 2]
    assert _args_repr("allocation.allocate_trainer", ids) == saferepr(("allocation.allocate_trainer", ids), 1024)
    long = _args_repr("allocation.allocate_trainer", list(range(10**6, 10**6 + 500)))
    assert len(long) == ARGS_REPR_MAXSIZE and long.startswith("('allocation.allocate_trainer', [1000000, 1000001,")


def test_the_claim_and_the_settle_are_prepared_once_per_connection(student: Any, course: Course) -> None:
    """PostgreSQL parsed the claim on every batch (relay_statements.execute): both of the relay's
    per-batch statements are server-side prepared statements, reused batch after batch."""

    def prepared() -> Counter[str]:
        """Runs of this connection's prepared statements by first word (WITH: the claim, UPDATE: the
        settle); the connection may come from the pool with earlier tests' statements."""
        runs: Counter[str] = Counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements")
            for statement, n in cursor:
                runs[statement.split()[0]] += n
        return runs

    before = prepared()
    for i in range(3):
        buy(student, course, f"pay_{i}")
        claimed = deliveries.claim(relay_id="a", limit=10)
        deliveries.settle_done([c.id for c in claimed])
    assert prepared() - before == Counter({"WITH": 3, "UPDATE": 3})


def _claim_plan_cost() -> float:
    """The estimated cost of the plan the relay's prepared claim would run now (its cached generic plan,
    once there is one), without running it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE statement LIKE '%%WITH heads AS%%'")
        (name,) = cursor.fetchone()
        cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name}('a')")
        return float(cursor.fetchone()[0][0]["Plan"]["Total Cost"])


def _grow_deliveries() -> None:
    """The table grows: 20,000 deliveries that are not due for a year."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO outbox_delivery (event_id, sink, student_id, seq, status, attempts, available_at, "
            "claimed_by, last_error, created_at) "
            "SELECT (SELECT id FROM outbox_outboxevent LIMIT 1), 'grown.' || g, g, 1, 'pending', 0, "
            "now() + interval '1 year', '', '', now() FROM generate_series(1, 20000) g"
        )


def test_the_relays_generic_plans_are_made_afresh_for_the_table_as_it_is(
    student: Any, course: Course, monkeypatch: Any
) -> None:
    """Planning every claim afresh was three quarters of its time, so the relay's prepared statements
    run generic plans only; but a generic plan cached while the outbox table was small made claims
    take up to a second once it had grown (relay_statements.session_prepare). So the relay drops its plans
    every REPLAN_SECONDS, and the next claim is planned for the table as it is then."""
    monkeypatch.setattr(relay_statements, "REPLAN_SECONDS", 3600.0)
    for i in range(8):  # PostgreSQL considers a generic plan from the sixth run on
        buy(student, course, f"plan_{i}")
        claimed = deliveries.claim(relay_id="a", limit=10)
        deliveries.settle_done([c.id for c in claimed])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(generic_plans), sum(custom_plans) FROM pg_prepared_statements "
            "WHERE statement LIKE '%%WITH heads AS%%'"
        )
        generic, custom = cursor.fetchone()  # (the pooled connection may have claimed in earlier tests)
    assert generic >= 8 and custom == 0
    small = _claim_plan_cost()
    _grow_deliveries()
    deliveries.claim(relay_id="a", limit=10)
    assert _claim_plan_cost() == small  # within REPLAN_SECONDS: the cached plan, made for the small table

    monkeypatch.setattr(relay_statements, "REPLAN_SECONDS", 0.0)
    deliveries.claim(relay_id="a", limit=10)
    assert _claim_plan_cost() != small


def test_a_slow_claim_has_the_next_one_planned_afresh(student: Any, course: Course, monkeypatch: Any) -> None:
    """A relay that planned on a quiet table and then met a backlog kept the quiet table's plan until
    the next replan (a 10,000-event drain ran at 6,100 instead of 8,800 events/s): a claim slower than
    REPLAN_AFTER_SLOW_CLAIM_SECONDS has the next one planned for the table as it is."""
    monkeypatch.setattr(relay_statements, "REPLAN_SECONDS", 3600.0)
    for i in range(6):
        buy(student, course, f"slow_{i}")
        deliveries.settle_done([c.id for c in deliveries.claim(relay_id="a", limit=10)])
    small = _claim_plan_cost()
    _grow_deliveries()
    deliveries.claim(relay_id="a", limit=10)  # fast: the plan stays
    assert _claim_plan_cost() == small

    monkeypatch.setattr(relay_statements, "REPLAN_AFTER_SLOW_CLAIM_SECONDS", 0.0)  # every claim is slow
    deliveries.claim(relay_id="a", limit=10)
    deliveries.claim(relay_id="a", limit=10)  # planned afresh
    assert _claim_plan_cost() != small


def test_with_relay_db_prepare_off_the_claim_and_the_settle_are_plain_statements(
    student: Any, course: Course, settings: Any, monkeypatch: Any
) -> None:
    """RELAY_DB_PREPARE=0, for a transaction-mode pooler: nothing is prepared on the relay's connection,
    and no replanning statement is sent (there is no plan of ours to remake)."""
    from django.test.utils import CaptureQueriesContext

    settings.RELAY_DB_PREPARE = False
    monkeypatch.setattr(relay_statements, "REPLAN_SECONDS", 0.0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        before = cursor.fetchone()[0]
    with CaptureQueriesContext(connection) as captured:
        for i in range(3):
            buy(student, course, f"plain_{i}")
            claimed = deliveries.claim(relay_id="a", limit=10)
            assert claimed
            deliveries.settle_done([c.id for c in claimed])
    assert not [q["sql"] for q in captured.captured_queries if "DISCARD" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == before


def test_a_failed_head_sends_its_students_later_deliveries_back_without_a_transaction_each(
    student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch is not read before it is applied, so the runner learns a delivery's student from the
    statement that applies it; once a stream has stopped, the rest of the batch's students are read in
    one query and that stream's later deliveries go back together, not through a transaction each."""
    from django.test.utils import CaptureQueriesContext

    from allocation import services
    from outbox.runner import run_handler_batch

    def allocate(*, purchase_id: int, cause: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(services, "trainer_allocate", allocate)
    for i in range(4):
        buy(student, course, f"pay_stuck_{i}")
    sink = "allocation.allocate_trainer"
    ids = [c.id for c in deliveries.claim(relay_id="a", limit=50) if c.sink == sink]
    assert len(ids) == 4
    with CaptureQueriesContext(connection) as captured:
        run_handler_batch(sink=sink, delivery_ids=ids)
    applies = [q for q in captured.captured_queries if "outbox_inboxentry" in q["sql"]]
    assert len(applies) == 1  # the head's; its three followers were handed back without being tried
    head, *rest = Delivery.objects.filter(id__in=ids).order_by("seq")
    assert head.status == "pending" and head.attempts == 1 and "boom" in head.last_error
    assert [(d.status, d.attempts) for d in rest] == [("pending", 0)] * 3
