"""The Django admin changes purchases only through the services, with the admin user as the actor.

Every request goes through the real admin (test client, logged-in superuser, real forms and actions)
on the real database, so the deferred outbox trigger checks each COMMIT.
"""

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from allocation.models import Trainer
from backoffice.admin import outbox as outbox_admin
from backoffice.admin.allocation import TrainerForm
from outbox.models import Delivery, OutboxEvent
from outbox.testing import capture_events, deliver_outbox, deliver_pending
from purchases.errors import UnknownStudent
from purchases.models import Course, Purchase
from tests.support.purchases import buy
from tests.support.trainers import availability_form, available_trainer

pytestmark = pytest.mark.django_db(transaction=True)
ADD_URL = "/admin/purchases/purchase/add/"
CHANGELIST_URL = "/admin/purchases/purchase/"


def add_purchase(ops: Client, **fields: Any) -> Any:
    return ops.post(ADD_URL, {"amount": "", "currency": "", "_save": "Save", **fields})


def act(ops: Client, action: str, purchases: list[Purchase], **extra: str) -> Any:
    return ops.post(CHANGELIST_URL, {"action": action, "_selected_action": [p.pk for p in purchases], **extra})


def test_the_add_form_creates_through_purchase_create(ops: Client, student: Any, course: Course) -> None:
    page = ops.get(ADD_URL)
    assert page.status_code == 200
    for name in ("payment_id", "student", "course", "amount", "currency"):
        assert f'name="{name}"' in page.text

    response = add_purchase(ops, payment_id="pay_admin", student=student.pk, course=course.pk)

    purchase = Purchase.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:purchases_purchase_change", args=[purchase.pk]
    )
    assert purchase.payment.provider_payment_id == "pay_admin" and purchase.student == student
    assert (purchase.payment.amount, purchase.payment.currency) == (course.price, course.currency)  # defaults
    event = OutboxEvent.objects.get()
    assert (event.type, event.actor, event.correlation_id) == ("purchase.created", "admin:ops", "pay_admin")
    assert LogEntry.objects.get().object_id == str(purchase.pk)
    follow = ops.get(response["Location"])
    assert "Created purchase" in follow.text
    assert reverse("admin:outbox_outboxevent_trace", args=["pay_admin"]) in follow.text  # linked timeline


def test_the_add_form_rejects_unknown_students_and_courses(ops: Client, student: Any, course: Course) -> None:
    inactive = get_user_model().objects.create_user("gone", is_active=False)
    for fields, message in [
        ({"student": 999_999, "course": course.pk}, "No active student with this id."),
        ({"student": inactive.pk, "course": course.pk}, "No active student with this id."),
        ({"student": student.pk, "course": 999_999}, "No course with this id."),
        ({"student": student.pk, "course": course.pk, "currency": "euro"}, "Enter a valid value."),
    ]:
        response = add_purchase(ops, payment_id="pay_x", **fields)
        assert response.status_code == 200 and message in response.text
    assert not Purchase.objects.exists() and not OutboxEvent.objects.exists()


def test_adding_a_payment_again_changes_nothing(ops: Client, make_student: Any, course: Course) -> None:
    student, other = make_student(), make_student()
    add_purchase(ops, payment_id="pay_twice", student=student.pk, course=course.pk)
    again = add_purchase(ops, payment_id="pay_twice", student=student.pk, course=course.pk)
    assert again.status_code == 302
    assert "already had purchase" in ops.get(again["Location"]).text
    conflicting = add_purchase(ops, payment_id="pay_twice", student=other.pk, course=course.pk)
    assert conflicting.status_code == 200 and "already has purchase" in conflicting.text
    assert Purchase.objects.count() == 1 and OutboxEvent.objects.count() == 1
    assert LogEntry.objects.count() == 1  # the no-op is not logged as an addition


def test_a_domain_error_after_validation_creates_nothing_and_says_why(
    ops: Client, student: Any, course: Course, monkeypatch: pytest.MonkeyPatch
) -> None:
    from purchases import services

    def deactivated_meanwhile(**kwargs: Any) -> None:
        raise UnknownStudent(f"no active student with id {student.pk}", student_id=student.pk)

    monkeypatch.setattr(services, "purchase_create", deactivated_meanwhile)
    response = add_purchase(ops, payment_id="pay_race", student=student.pk, course=course.pk)
    assert response.status_code == 302 and response["Location"] == ADD_URL
    assert "Nothing was created: no active student with id" in ops.get(ADD_URL).text
    assert not Purchase.objects.exists() and not LogEntry.objects.exists()


def test_purchases_and_other_domain_rows_are_read_only(ops: Client, student: Any, course: Course) -> None:
    trainer = available_trainer(name="Ada", capacity=5)
    with deliver_outbox():  # allocation and sessions exist now
        purchase = buy(student, course, "pay_ro")
    change = reverse("admin:purchases_purchase_change", args=[purchase.pk])
    view = ops.get(change)
    assert view.status_code == 200
    assert 'name="status"' not in view.text and 'name="_save"' not in view.text
    assert trainer.name in view.text and "3 scheduled" in view.text  # trainer and sessions shown
    assert "delivered: Everything delivered" in view.text
    assert ops.post(change, {"status": "refunded"}).status_code == 403
    assert ops.post(reverse("admin:purchases_purchase_delete", args=[purchase.pk])).status_code == 403
    for model in (
        "purchases/payment",
        "purchases/providerevent",
        "allocation/allocation",
        "sessions_app/trainingsession",
    ):
        assert ops.get(f"/admin/{model}/").status_code == 200
        assert ops.get(f"/admin/{model}/add/").status_code == 403
    purchase.refresh_from_db()
    assert purchase.status == "active"


def test_rerun_allocation_calls_trainer_allocate_as_the_admin(ops: Client, student: Any, course: Course) -> None:
    with deliver_outbox():
        purchase = buy(student, course, "pay_wait")
    purchase.refresh_from_db()
    assert purchase.status == "waitlisted"  # no trainer yet
    available_trainer(name="Ada", capacity=1)

    with capture_events() as emitted:
        response = act(ops, "rerun_allocation", [purchase])
    assert response.status_code == 302
    purchase.refresh_from_db()
    assert purchase.status == "active"
    assert [(e.type, e.actor, e.correlation_id) for e in emitted] == [("trainer.allocated", "admin:ops", "pay_wait")]
    deliver_pending()  # the follow-up work runs as for any allocation
    assert OutboxEvent.objects.filter(type="sessions.generated", correlation_id="pay_wait").exists()
    with capture_events() as emitted:
        act(ops, "rerun_allocation", [purchase])  # active now: skipped, nothing emitted
    assert emitted == []
    assert OutboxEvent.objects.filter(type="trainer.allocated").count() == 1


def test_refund_asks_first_then_calls_purchase_refund(ops: Client, student: Any, course: Course) -> None:
    trainer = available_trainer(name="Ada", capacity=1)
    with deliver_outbox():
        purchase = buy(student, course, "pay_refund")

    with capture_events() as emitted:
        confirm = act(ops, "refund", [purchase])
    assert confirm.status_code == 200 and "Yes, refund" in confirm.text and "pay_refund" in confirm.text
    purchase.refresh_from_db()
    assert purchase.status == "active" and emitted == []  # nothing happened yet

    act(ops, "refund", [purchase], confirm="yes")
    purchase.refresh_from_db()
    trainer.refresh_from_db()
    assert purchase.status == "refunded" and trainer.active_count == 0
    refunded = OutboxEvent.objects.get(type="purchase.refunded")
    assert (refunded.actor, refunded.correlation_id) == ("admin:ops", "pay_refund")
    deliver_pending()
    assert OutboxEvent.objects.filter(type="sessions.cancelled", correlation_id="pay_refund").exists()


def test_resync_emits_student_resync_requested_once_per_student(ops: Client, student: Any, course: Course) -> None:
    purchases = [buy(student, course, "pay_a"), buy(student, course, "pay_b")]
    act(ops, "resync_students", purchases)
    (event,) = OutboxEvent.objects.filter(type="student.resync_requested")
    assert (event.actor, event.student_id) == ("admin:ops", student.pk)


def test_trainer_capacity_is_editable_but_active_count_is_not(
    ops: Client, student: Any, course: Course, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = available_trainer(name="Ada", capacity=2)
    with deliver_outbox():
        buy(student, course, "pay_t")
    url = reverse("admin:allocation_trainer_change", args=[trainer.pk])
    assert 'name="active_count"' not in ops.get(url).text

    # An allocation commits while the admin's request is in flight: saving must not undo it.
    real_clean = TrainerForm.clean

    def clean_with_concurrent_allocation(form: TrainerForm) -> Any:
        Trainer.objects.filter(pk=trainer.pk).update(active_count=F("active_count") + 1)
        return real_clean(form)

    monkeypatch.setattr(TrainerForm, "clean", clean_with_concurrent_allocation)
    form = {"name": "Ada L.", "capacity": 4, "timezone": "UTC", **availability_form(trainer), "_save": "Save"}
    assert ops.post(url, form).status_code == 302
    trainer.refresh_from_db()
    assert (trainer.name, trainer.capacity, trainer.active_count) == ("Ada L.", 4, 2)
    monkeypatch.setattr(TrainerForm, "clean", real_clean)

    too_low = ops.post(url, {"name": "Ada L.", "capacity": 1, "_save": "Save"})
    assert too_low.status_code == 200 and "capacity can&#x27;t go below" in too_low.text


def test_outbox_lists_filter_and_show_dead_letters_with_their_error(
    ops: Client, student: Any, course: Course, monkeypatch: pytest.MonkeyPatch
) -> None:
    from allocation import services

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("trainer directory unreachable")

    monkeypatch.setattr(services, "trainer_allocate", broken)
    with deliver_outbox():
        buy(student, course, "pay_dead")
    dead = Delivery.objects.get(sink="allocation.allocate_trainer")
    Delivery.objects.filter(pk=dead.pk).update(status="dead")

    deliveries = ops.get("/admin/outbox/delivery/", {"problem": "dead"})
    assert deliveries.status_code == 200
    assert "RuntimeError: trainer directory unreachable" in deliveries.text
    assert f"/admin/outbox/delivery/{dead.pk}/change/" in deliveries.text
    for query in (
        {"status__exact": "dead"},
        {"sink": "allocation.allocate_trainer"},
        {"event_type": "purchase.created"},
        {"student": str(student.pk)},
        {"age": "5m"},
        {"problem": "failing"},
        {"problem": "expired"},
    ):
        assert ops.get("/admin/outbox/delivery/", query).status_code == 200, query
    for query in ({"type": "purchase.created"}, {"problem": "dead"}, {"student": str(student.pk)}, {"age": "old"}):
        assert ops.get("/admin/outbox/outboxevent/", query).status_code == 200, query
    events = ops.get("/admin/outbox/outboxevent/", {"problem": "dead", "student": str(student.pk)})
    assert "allocation.allocate_trainer: dead" in events.text
    assert "pay_dead" not in ops.get("/admin/outbox/outboxevent/", {"student": "999999"}).text
    for odd in ("²", "٣", "9" * 30, "-1", "1e3"):  # not a student id: the list, unfiltered, never a 500
        assert ops.get("/admin/outbox/outboxevent/", {"student": odd}).status_code == 200, odd
        assert ops.get("/admin/outbox/delivery/", {"student": odd}).status_code == 200, odd
    assert ops.get(f"/admin/outbox/outboxevent/{dead.event_id}/change/").status_code == 200
    assert ops.get("/admin/outbox/outboxevent/add/").status_code == 403
    assert ops.post(f"/admin/outbox/delivery/{dead.pk}/change/", {"status": "done"}).status_code == 403


def test_big_outbox_lists_are_not_counted_in_full(
    ops: Client, student: Any, course: Course, monkeypatch: pytest.MonkeyPatch
) -> None:
    buy(student, course, "pay_count")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE outbox_delivery")
    monkeypatch.setattr(outbox_admin, "ESTIMATE_ABOVE", 0)  # as if the history were big
    with CaptureQueriesContext(connection) as queries:
        assert ops.get("/admin/outbox/delivery/").status_code == 200
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "outbox_delivery" in q["sql"]]
    assert counts == [], counts
    with CaptureQueriesContext(connection) as queries:
        assert ops.get("/admin/outbox/delivery/", {"problem": "open"}).status_code == 200
    assert any("COUNT(" in q["sql"].upper() for q in queries)  # a filtered list counts exactly


def test_the_retry_action_requeues_and_the_chain_completes(
    ops: Client, student: Any, course: Course, monkeypatch: pytest.MonkeyPatch
) -> None:
    from allocation import services

    available_trainer(name="Ada", capacity=5)
    real = services.trainer_allocate
    monkeypatch.setattr(services, "trainer_allocate", lambda **kw: (_ for _ in ()).throw(RuntimeError("down")))
    with deliver_outbox():
        buy(student, course, "pay_retry")
    dead = Delivery.objects.get(sink="allocation.allocate_trainer")
    Delivery.objects.filter(pk=dead.pk).update(status="dead")
    monkeypatch.setattr(services, "trainer_allocate", real)  # the cause is fixed

    trace_page = ops.get(reverse("admin:outbox_outboxevent_trace", args=["pay_retry"]))
    assert 'value="retry_deliveries"' in trace_page.text  # a retry button on the timeline
    response = ops.post(
        "/admin/outbox/delivery/",
        {"action": "retry_deliveries", "_selected_action": [dead.pk], "next": "/admin/outbox/outboxevent/"},
    )
    assert response.status_code == 302 and response["Location"] == "/admin/outbox/outboxevent/"
    dead.refresh_from_db()
    assert (dead.status, dead.attempts) == ("pending", 0)
    deliver_pending()
    assert list(OutboxEvent.objects.order_by("seq").values_list("type", flat=True)) == [
        "purchase.created",
        "trainer.allocated",
        "sessions.generated",
    ]
    assert set(Delivery.objects.values_list("status", flat=True)) == {"done"}


def test_the_timeline_page_shows_the_chain_and_verdict(ops: Client, student: Any, course: Course) -> None:
    available_trainer(name="Ada", capacity=5)
    buy(student, course, "pay/with/slash")
    assert reverse("admin:outbox_outboxevent_trace", args=["pay/with/slash"]) in ops.get(CHANGELIST_URL).text
    pending = ops.get(reverse("admin:outbox_outboxevent_trace", args=["pay/with/slash"]))
    assert pending.status_code == 200 and 'data-state="in_progress"' in pending.text
    deliver_pending()
    page = ops.get(reverse("admin:outbox_outboxevent_trace", args=["pay/with/slash"]))
    assert page.status_code == 200
    assert 'data-state="delivered"' in page.text and "Everything delivered" in page.text
    for text in ("#1 purchase.created", "#2 trainer.allocated", "#3 sessions.generated", "handler:sessions.generate"):
        assert text in page.text
    missing = ops.get(reverse("admin:outbox_outboxevent_trace", args=["pay_unknown"]))
    assert missing.status_code == 404 and "No events for payment" in missing.text
    assert Client().get(reverse("admin:outbox_outboxevent_trace", args=["pay/with/slash"])).status_code == 302  # login
