"""The chaos suite's tools: a webhook load generator, process killers and the invariant checker."""

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q

from allocation.models import Allocation, Trainer
from outbox.models import Delivery, InboxEntry, OutboxEvent, StudentStream
from purchases.models import Purchase
from realtime.testing import GroupListener
from tests.support.trainers import overlapping_sessions
from tests.support.waiting import wait_until
from tests.support.webhooks import post_webhook, webhook_body

# Short leases and backoff so a killed process's work comes round again within a test's budget.
CHAOS_ENV = {
    "OUTBOX_LEASE_SECONDS": "1",
    "OUTBOX_HANDLER_LEASE_SECONDS": "3",
    "OUTBOX_BACKOFF_BASE_SECONDS": "0.2",
    "OUTBOX_BACKOFF_MAX_SECONDS": "1",
    "OUTBOX_POLL_SECONDS": "0.2",
    "OUTBOX_BATCH_SIZE": "50",
}


@dataclass
class Load:
    """Posts `count` signed webhooks from a few threads; remembers what was accepted."""

    host: str
    students: list[int]
    courses: list[int]
    count: int
    prefix: str = "pay"
    threads: int = 4
    accepted: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]

    def start(self) -> "Load":
        for worker in self._workers:
            worker.start()
        return self

    def running(self) -> bool:
        return any(w.is_alive() for w in self._workers)

    def join(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        assert not self.running(), "load generator did not finish"

    def _run(self) -> None:
        rnd = random.Random()
        while True:
            with self._lock:
                if self._next >= self.count:
                    return
                n = self._next
                self._next += 1
            payment_id = f"{self.prefix}_{n}"
            body = webhook_body(
                payment_id=payment_id, student_id=rnd.choice(self.students), course_id=rnd.choice(self.courses)
            )
            status, reply = _post(self.host, body)
            with self._lock:
                if status == 200:
                    self.accepted[payment_id] = reply["purchase_id"]
                else:
                    self.failures.append((payment_id, status, json.dumps(reply)[:200]))


def _post(host: str, body: bytes) -> tuple[int, Any]:
    """Like `post_webhook`, but a refused connection or a non-JSON answer is a recorded failure, not a crash."""
    try:
        return post_webhook(host, body)
    except (OSError, ValueError) as exc:
        return 0, {"error": repr(exc)}


def kill9(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def drained(*, allow_blocked: bool = False) -> bool:
    """Every delivery settled (done or dead-lettered); with `allow_blocked`, deliveries waiting behind
    a dead-lettered one of their stream (order is kept over availability) count as settled too."""
    open_ = Delivery.objects.filter(status__in=["pending", "in_flight"])
    if allow_blocked:
        open_ = open_.exclude(
            Exists(
                Delivery.objects.filter(
                    sink=OuterRef("sink"), student_id=OuterRef("student_id"), seq__lt=OuterRef("seq"), status="dead"
                )
            )
        )
    return not open_.exists()


def wait_drained(timeout: float = 180, *, allow_blocked: bool = False) -> None:
    wait_until(
        lambda: drained(allow_blocked=allow_blocked), timeout=timeout, what="every delivery done or dead-lettered"
    )


def wait_pushed(listener: GroupListener, timeout: float = 60) -> None:
    """Every student's last seq has reached the listener."""

    def caught_up() -> bool:
        last = dict(StudentStream.objects.values_list("student_id", "last_seq"))
        return all(max(listener.seqs(sid), default=0) >= seq for sid, seq in last.items())

    wait_until(caught_up, timeout=timeout, what="every student's last event pushed")


def check_invariants(
    *, accepted: dict[str, int], listener: GroupListener | None = None, allow_dead: bool = False
) -> dict[str, int]:
    """Assert the system's invariants after a chaos run; return what the run saw."""
    # Every accepted payment has exactly one purchase, and there is no other purchase.
    purchases = {p.payment.provider_payment_id: p for p in Purchase.objects.select_related("payment", "course")}
    assert set(purchases) == set(accepted), "purchases differ from accepted payments"
    assert all(purchases[pid].pk == purchase_id for pid, purchase_id in accepted.items())
    # Every purchase exactly one allocation (active) or a waitlist place; active ones their sessions.
    allocations = Counter(Allocation.objects.filter(released_at=None).values_list("purchase_id", flat=True))
    sessions = dict(
        Purchase.objects.annotate(n=Count("sessions", filter=Q(sessions__status="scheduled"))).values_list("pk", "n")
    )
    statuses = Counter(p.status for p in purchases.values())
    for purchase in purchases.values():
        if purchase.status == "active":
            assert allocations[purchase.pk] == 1, f"purchase {purchase.pk} has {allocations[purchase.pk]} allocations"
            assert sessions[purchase.pk] == purchase.course.sessions_count, f"purchase {purchase.pk} sessions"
        else:
            assert purchase.status == "waitlisted", f"purchase {purchase.pk} stuck in {purchase.status}"
            assert allocations[purchase.pk] == 0 and sessions[purchase.pk] == 0
    # No trainer has two scheduled sessions that overlap (the exclusion constraint, under faults).
    assert overlapping_sessions() == 0, "a trainer is double-booked"
    # No trainer over capacity, and the counter matches the allocations.
    for trainer in Trainer.objects.annotate(n=Count("allocations", filter=Q(allocations__released_at=None))):
        assert trainer.n == trainer.active_count <= trainer.capacity, f"trainer {trainer.pk}: {trainer.n}"
    # Every delivery done (or dead-lettered, where the test expects it).
    states = Counter(Delivery.objects.values_list("status", flat=True))
    assert set(states) <= ({"done", "dead"} if allow_dead else {"done"}), states
    # Each student's seqs gapless; each handler effect once.
    for student_id, last_seq in StudentStream.objects.values_list("student_id", "last_seq"):
        seqs = list(OutboxEvent.objects.filter(student_id=student_id).order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, last_seq + 1)), f"student {student_id} seqs have a gap"
    handler_done = Delivery.objects.filter(status="done").exclude(sink="realtime").count()
    assert InboxEntry.objects.count() == handler_done
    summary = {
        "payments_accepted": len(accepted),
        "active": statuses["active"],
        "waitlisted": statuses["waitlisted"],
        "events": OutboxEvent.objects.count(),
        "deliveries_retried": Delivery.objects.filter(attempts__gt=1).count(),
        "dead": states["dead"],
    }
    if listener is not None:
        pushed = duplicates = 0
        for student_id, last_seq in StudentStream.objects.values_list("student_id", "last_seq"):
            seen: list[int] = []
            for seq in listener.seqs(student_id):  # what a client does: drop what it already has
                pushed += 1
                if seen and seq <= seen[-1]:
                    duplicates += 1
                    continue
                seen.append(seq)
            assert seen == list(range(1, last_seq + 1)), f"student {student_id} saw {seen}"
        summary.update(pushes=pushed, duplicate_pushes=duplicates)
    return summary


def report(name: str, summary: dict[str, int]) -> None:
    """Print and keep the run's figures (pytest -s shows them; CI keeps the file)."""
    line = json.dumps({"test": name, **summary})
    print(f"\nCHAOS {line}")
    path = os.environ.get("CHAOS_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")
