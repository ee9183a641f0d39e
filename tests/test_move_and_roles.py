"""`refund_purchase`, `fix_purchase --move-to-course` (refund and new purchase in one transaction, one
chain) and the rule that only students hold purchases (webhook 422, commands a clear error)."""

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.http import HttpRequest
from django.test import Client

from allocation.models import Trainer
from outbox.models import OutboxEvent
from outbox.testing import deliver_outbox, deliver_pending
from purchases.models import Course, Purchase
from sessions_app.models import TrainingSession
from tests.support.purchases import buy
from tests.support.webhooks import signature, webhook_body

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_refund_purchase_command_refunds_through_the_service_and_is_idempotent(
    student: Any, course: Course, trainer: Trainer
) -> None:
    with deliver_outbox():
        buy(student, course, "pay_1")
    assert "refunded purchase" in run("refund_purchase", "pay_1")
    assert "was already refunded" in run("refund_purchase", "pay_1")
    deliver_pending()
    assert Purchase.objects.get().status == "refunded"
    assert OutboxEvent.objects.filter(type="purchase.refunded", actor="command:refund_purchase").count() == 1
    assert not TrainingSession.objects.filter(status="scheduled").exists()
    with pytest.raises(CommandError, match="unknown payment: no purchase for payment 'pay_none'"):
        run("refund_purchase", "pay_none")


def test_move_to_course_is_one_transaction_and_one_chain(student: Any, course: Course, trainer: Trainer) -> None:
    other = Course.objects.create(title="Mobility", price="120.00", currency="EUR", sessions_count=2)
    with deliver_outbox():
        buy(student, course, "pay_1")
    out = run("fix_purchase", "pay_1", "--move-to-course", str(other.pk))
    assert f"moved payment 'pay_1' to course {other.pk}" in out
    # Refund and new purchase were written by one transaction (the events' xid, kept for the guard).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT type, tx_id::text FROM outbox_outboxevent WHERE actor = 'command:fix_purchase' ORDER BY seq"
        )
        rows = cursor.fetchall()
    # The refund cancels the old purchase's future sessions in its own transaction (freeing the slots).
    assert sorted(r[0] for r in rows) == ["purchase.created", "purchase.refunded", "sessions.cancelled"]
    assert len({r[1] for r in rows}) == 1
    deliver_pending()
    old, new = Purchase.objects.order_by("id")
    assert (old.status, old.course_id) == ("refunded", course.pk)
    assert (new.status, new.course_id, new.student_id) == ("active", other.pk, student.pk)
    assert new.payment.amount == old.payment.amount
    chain = list(OutboxEvent.objects.filter(correlation_id="pay_1").order_by("seq").values_list("type", flat=True))
    assert chain[:3] == ["purchase.created", "trainer.allocated", "sessions.generated"]
    assert sorted(chain[3:]) == sorted(
        ["purchase.refunded", "purchase.created", "sessions.cancelled", "trainer.allocated", "sessions.generated"]
    )
    assert TrainingSession.objects.filter(purchase=new, status="scheduled").count() == 2
    # Again: nothing new.
    assert "was already moved" in run("fix_purchase", "pay_1", "--move-to-course", str(other.pk))
    assert Purchase.objects.count() == 2
    with pytest.raises(CommandError, match="same course"):
        run("fix_purchase", f"pay_1>course-{other.pk}", "--move-to-course", str(other.pk))
    with pytest.raises(CommandError, match="unknown course"):
        run("fix_purchase", f"pay_1>course-{other.pk}", "--move-to-course", "987654")


def test_a_failed_move_leaves_the_purchase_as_it_was(student: Any, course: Course, trainer: Trainer) -> None:
    buy(student, course, "pay_1")
    with pytest.raises(CommandError):
        run("fix_purchase", "pay_1", "--move-to-course", "987654")
    assert Purchase.objects.get().status == "pending"
    assert not OutboxEvent.objects.filter(type="purchase.refunded").exists()


@pytest.mark.parametrize("role", ["staff", "superuser"])
def test_only_students_hold_purchases(client: Client, course: Course, role: str) -> None:
    users = get_user_model().objects
    user = (
        users.create_superuser("boss", "boss@example.com", "pw")
        if role == "superuser"
        else users.create_user("clerk", is_staff=True)
    )
    body = webhook_body(payment_id="pay_staff", student_id=user.pk, course_id=course.pk)
    response = client.post(
        "/api/v1/payments/webhook",
        body,
        content_type="application/json",
        headers={"Payment-Signature": signature(body)},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "not_a_student"
    assert "only students can hold purchases" in response.json()["error"]["message"]
    with pytest.raises(CommandError, match=f"not a student: user {user.pk} is staff or a superuser"):
        run("fix_purchase", "pay_cli", "--student", str(user.pk), "--course", str(course.pk))
    assert not Purchase.objects.exists()


def test_the_admin_moves_and_refuses_staff_through_the_same_services(
    student: Any, course: Course, trainer: Trainer
) -> None:
    get_user_model().objects.create_superuser("ops", "ops@example.com", "secret")
    ops = Client()
    ops.login(request=HttpRequest(), username="ops", password="secret")  # axes needs the request
    other = Course.objects.create(title="Mobility", price="120.00", currency="EUR", sessions_count=2)
    with deliver_outbox():
        purchase = buy(student, course, "pay_1")
    selected = {"action": "move_to_course", "_selected_action": [purchase.pk]}
    page = ops.post("/admin/purchases/purchase/", selected)
    assert page.status_code == 200 and b"New course" in page.content  # asks first, nothing moved
    assert Purchase.objects.count() == 1
    done = ops.post("/admin/purchases/purchase/", {**selected, "confirm": "yes", "course": other.pk}, follow=True)
    assert b"Moved 1 purchase(s) to Mobility" in done.content
    moved = OutboxEvent.objects.filter(correlation_id="pay_1", actor="admin:ops").values_list("type", flat=True)
    assert sorted(moved) == ["purchase.created", "purchase.refunded", "sessions.cancelled"]
    assert Purchase.objects.get(course=other).payment.provider_payment_id == f"pay_1>course-{other.pk}"

    clerk = get_user_model().objects.create_user("clerk", is_staff=True)
    page = ops.post(
        "/admin/purchases/purchase/add/",
        {"payment_id": "pay_clerk", "student": clerk.pk, "course": course.pk, "amount": "", "currency": ""},
    )
    assert b"only students can hold purchases" in page.content
    assert not Purchase.objects.filter(student=clerk).exists()


def _signed_post(client: Client, body: bytes) -> Any:
    return client.post(
        "/api/v1/payments/webhook",
        body,
        content_type="application/json",
        headers={"Payment-Signature": signature(body)},
    )


def test_a_provider_refund_after_a_move_refunds_the_moved_purchase(
    client: Client, student: Any, course: Course, trainer: Trainer
) -> None:
    """The money goes back for the course the payment holds now: a refund answered 'refunded' while the
    moved purchase stayed active would leave the student a free course."""
    other = Course.objects.create(title="Mobility", price="120.00", currency="EUR", sessions_count=2)
    buy(student, course, "pay_1")
    run("fix_purchase", "pay_1", "--move-to-course", str(other.pk))
    refund = webhook_body(
        payment_id="pay_1", student_id=student.pk, course_id=course.pk, event_id="evt_r", type="payment.refunded"
    )
    response = _signed_post(client, refund)
    assert response.status_code == 200, response.content
    old, moved = Purchase.objects.order_by("id")
    assert (old.status, moved.status) == ("refunded", "refunded")
    assert response.json() == {"purchase_id": moved.pk, "status": "refunded"}
    assert _signed_post(client, refund).json() == {"purchase_id": moved.pk, "status": "refunded"}  # a retry


def test_a_refunded_or_already_moved_purchase_cannot_be_moved(student: Any, course: Course, trainer: Trainer) -> None:
    other = Course.objects.create(title="Mobility", price="120.00", currency="EUR", sessions_count=2)
    third = Course.objects.create(title="Yoga", price="90.00", currency="EUR", sessions_count=2)
    buy(student, course, "pay_1")
    run("fix_purchase", "pay_1", "--move-to-course", str(other.pk))
    with pytest.raises(CommandError, match="refunded \\(or moved already\\)"):
        run("fix_purchase", "pay_1", "--move-to-course", str(third.pk))  # the original was moved already
    buy(student, course, "pay_2")
    run("refund_purchase", "pay_2")
    with pytest.raises(CommandError, match="refunded \\(or moved already\\)"):
        run("fix_purchase", "pay_2", "--move-to-course", str(other.pk))
    long_id = "p" * 128
    buy(student, course, long_id)
    with pytest.raises(CommandError, match="too long to move"):
        run("fix_purchase", long_id, "--move-to-course", str(other.pk))
    assert Purchase.objects.filter(course=third).count() == 0
    assert Purchase.objects.exclude(status="refunded").count() == 2  # the moved one and the long one
