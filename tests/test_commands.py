"""Manual fixes go the webhook's way: the admin, `fix_purchase` and the webhook produce the same chain,
the same cache invalidation and the same pushes, through the relay; only the actor differs.
Also `resync_student`, and the commands' errors and exit codes."""

import subprocess
import sys
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.http import HttpRequest
from django.test import Client

from config.processes import ROOT
from outbox.models import OutboxEvent
from outbox.testing import deliver_pending
from purchases.models import Course, Purchase
from realtime.testing import GroupListener
from tests.support.processes import process_env
from tests.support.trainers import available_trainer
from tests.support.waiting import wait_until
from tests.support.webhooks import signature, webhook_body

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def cache_floor(student_id: int) -> int:
    """The seq up to which the relay has invalidated the student's cached views (0: never)."""
    key = f"{settings.READ_CACHE_PREFIX}:student:{student_id}"
    return int(redis.Redis.from_url(settings.REDIS_URL).hget(key, "floor") or 0)


def dashboard(client: Client, student: Any) -> tuple[dict[str, Any], str]:
    response = client.get("/api/v1/me/dashboard", headers={"Authorization": f"Token {student.auth_token.key}"})
    assert response.status_code == 200
    return response.json(), response["X-Cache"]


def chain(payment_id: str) -> list[tuple[Any, ...]]:
    """The payment's chain without ids and times: (seq, type, actor, cause's seq)."""
    events = list(OutboxEvent.objects.filter(correlation_id=payment_id).order_by("seq"))
    seq_of = {e.id: e.seq for e in events}
    return [(e.seq, e.type, e.actor, seq_of.get(e.causation_id) if e.causation_id else None) for e in events]


def test_admin_fix_purchase_and_webhook_produce_the_same_chain_cache_invalidation_and_pushes(
    make_student: Any, course: Course
) -> None:
    available_trainer(name="Ada", capacity=10)
    by_admin, by_command, by_webhook = make_student(), make_student(), make_student()
    students = {"admin": by_admin, "command": by_command, "webhook": by_webhook}
    api = Client()
    for student in students.values():
        assert dashboard(api, student)[1] == "miss"
        assert dashboard(api, student)[1] == "hit"  # cached at seq 0: stale once a purchase exists

    get_user_model().objects.create_superuser("ops", "ops@example.com", "secret")
    operator = Client()
    operator.login(request=HttpRequest(), username="ops", password="secret")
    added = operator.post(
        "/admin/purchases/purchase/add/",
        {"payment_id": "pay_admin", "student": by_admin.pk, "course": course.pk, "amount": "", "currency": ""},
    )
    assert added.status_code == 302
    run("fix_purchase", "pay_command", "--student", by_command.pk, "--course", course.pk)
    body = webhook_body(payment_id="pay_webhook", student_id=by_webhook.pk, course_id=course.pk)
    hooked = api.post(
        "/api/v1/payments/webhook",
        data=body,
        content_type="application/json",
        headers={"Payment-Signature": signature(body)},
    )
    assert hooked.status_code == 200

    with GroupListener([s.pk for s in students.values()]) as listener:
        deliver_pending()
        wait_until(lambda: listener.count() == 3 * 3, what="three pushes per student")

    actors = {"admin": "admin:ops", "command": "command:fix_purchase", "webhook": "webhook"}
    for how, student in students.items():
        payment_id = f"pay_{how}"
        assert chain(payment_id) == [
            (1, "purchase.created", actors[how], None),
            (2, "trainer.allocated", "handler:allocation.allocate_trainer", 1),
            (3, "sessions.generated", "handler:sessions.generate", 2),
        ], how
        pushed = listener.events[student.pk]
        assert [(e["seq"], e["type"]) for e in pushed] == [
            (1, "purchase.created"),
            (2, "trainer.allocated"),
            (3, "sessions.generated"),
        ], how
        assert pushed[0]["data"]["payment_id"] == payment_id
        assert cache_floor(student.pk) == 3, how  # invalidated up to the last event
        view, cache = dashboard(api, student)
        assert cache == "miss" and view["seq"] == 3, how  # the stale seq-0 view was not served
        assert [(p["status"], len(p["sessions"])) for p in view["purchases"]] == [("active", course.sessions_count)]
    # Apart from the actor, the three chains are identical.
    assert len({tuple((seq, t, c) for seq, t, _, c in chain(f"pay_{how}")) for how in students}) == 1


def test_fix_purchase_is_idempotent(student: Any, course: Course) -> None:
    first = run("fix_purchase", "pay_fix", "--student", student.pk, "--course", course.pk, "--amount", "99.50")
    assert "created purchase" in first and "manage.py trace pay_fix" in first
    again = run("fix_purchase", "pay_fix", "--student", student.pk, "--course", course.pk, "--amount", "99.50")
    assert "already has purchase" in again
    assert Purchase.objects.count() == 1 and OutboxEvent.objects.count() == 1
    payment = Purchase.objects.get().payment
    assert (payment.amount, payment.currency) == (Decimal("99.50"), "EUR")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--student", "999999", "--course", "{course}"], "unknown student: no active student with id 999999"),
        (["--student", "{student}", "--course", "999999"], "unknown course 999999"),
        (["--student", "{student}", "--course", "{course}", "--amount", "-1"], "invalid amount '-1'"),
        (["--student", "{student}", "--course", "{course}", "--amount", "1.234"], "invalid amount '1.234'"),
        (["--student", "{student}", "--course", "{course}", "--currency", "euro"], "invalid currency 'euro'"),
        (["--student", "abc", "--course", "{course}"], "invalid int value: 'abc'"),
        (["--course", "{course}"], r"--student and --course are required \(or --move-to-course to move a purchase\)"),
    ],
)
def test_fix_purchase_rejects_bad_arguments(student: Any, course: Course, args: list[str], message: str) -> None:
    filled = [a.format(student=student.pk, course=course.pk) for a in args]
    with pytest.raises(CommandError, match=message):
        run("fix_purchase", "pay_bad", *filled)
    assert not Purchase.objects.exists() and not OutboxEvent.objects.exists()


def test_fix_purchase_refuses_a_payment_that_belongs_to_another_purchase(make_student: Any, course: Course) -> None:
    owner, other = make_student(), make_student()
    run("fix_purchase", "pay_taken", "--student", owner.pk, "--course", course.pk)
    with pytest.raises(CommandError, match=r"already has purchase .* for student"):
        run("fix_purchase", "pay_taken", "--student", other.pk, "--course", course.pk)
    assert OutboxEvent.objects.count() == 1


def test_resync_student_invalidates_the_cache_and_pushes_through_the_relay(student: Any, course: Course) -> None:
    api = Client()
    dashboard(api, student)
    assert dashboard(api, student)[1] == "hit"
    out = run("resync_student", student.pk)
    assert "student.resync_requested" in out
    event = OutboxEvent.objects.get()
    assert (event.type, event.actor, event.student_id) == (
        "student.resync_requested",
        "command:resync_student",
        student.pk,
    )
    assert dashboard(api, student)[1] == "hit"  # nothing happens outside the relay

    with GroupListener([student.pk]) as listener:
        deliver_pending()
        wait_until(lambda: len(listener.events[student.pk]) == 1, what="the resync push")
    (pushed,) = listener.events[student.pk]
    assert (pushed["type"], pushed["seq"], pushed["data"]) == (
        "student.resync_requested",
        1,
        {"student_id": student.pk},
    )
    assert cache_floor(student.pk) == 1
    view, cache = dashboard(api, student)
    assert cache == "miss" and view["seq"] == 1


def test_resync_student_rejects_an_unknown_student(db: None) -> None:
    with pytest.raises(CommandError, match="unknown student 424242"):
        run("resync_student", "424242")
    assert not OutboxEvent.objects.exists()


def test_bad_arguments_exit_non_zero_from_the_command_line(student: Any, course: Course) -> None:
    """Through a real `manage.py` process: scripts see the failure in the exit code."""
    cases = [
        (["fix_purchase", "pay_cli", "--student", "999999", "--course", str(course.pk)], 1, "unknown student"),
        (["resync_student", "999999"], 1, "unknown student 999999"),
        (["trace", "pay_nowhere"], 1, "no events for payment 'pay_nowhere'"),
        (["outbox", "retry", "--id", "999999"], 1, "no delivery with id 999999"),
        (["outbox", "purge", "--older-than", "soon"], 2, "invalid duration 'soon'"),
        (["outbox", "frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, _, _ in cases
    ]
    for proc, (args, code, message) in zip(procs, cases, strict=True):
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == code, (args, stderr)
        assert message in stderr, (args, stderr)
    assert not Purchase.objects.exists()
