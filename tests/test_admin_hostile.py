"""The admin under hostile input: whatever a logged-in staff member's browser (or anything holding
their session) posts, the answer is a form error or a message, never a 500, and nothing changes.

Through the real admin (test client, logged-in superuser) on the real database.
"""

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from outbox.models import OutboxEvent
from outbox.testing import capture_events, deliver_outbox
from purchases.models import Course, Purchase
from tests.support.purchases import buy
from tests.test_admin import CHANGELIST_URL, act

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("changelist", "action"),
    [
        (CHANGELIST_URL, "refund"),  # integer ids, ours
        ("/admin/outbox/outboxevent/", "retry_event_deliveries"),  # UUID ids
        ("/admin/auth/user/", "delete_selected"),  # Django's own action on a third-party admin
    ],
)
@pytest.mark.parametrize("hostile", ["abc", "1e308", "NaN", "\x00", "1; DROP TABLE x", "x" * 5000])
def test_an_action_on_a_selection_that_is_not_ids_is_refused(
    ops: Client, student: Any, course: Course, changelist: str, action: str, hostile: str
) -> None:
    """Every admin on the site (backoffice/site.py) checks the posted ids before the action: Django's
    `pk__in` filter raised ValueError on them, a 500. Refused with a message; nothing changed."""
    purchase = buy(student, course, "pay_hostile")
    users, events = get_user_model().objects.count(), OutboxEvent.objects.count()
    with capture_events() as emitted:
        response = ops.post(
            changelist,
            {"action": action, "_selected_action": [str(purchase.pk), hostile], "confirm": "yes", "post": "yes"},
            follow=True,
        )
    assert response.redirect_chain == [(changelist, 302)]  # back to the list, as for an empty selection
    assert response.status_code == 200 and "not an id of this list" in response.text
    assert Purchase.objects.get(pk=purchase.pk).status == purchase.status
    assert emitted == [] and get_user_model().objects.count() == users and OutboxEvent.objects.count() == events


@pytest.mark.parametrize("chosen", ["abc", "1.5", "9" * 40, "-1", "\u0661"])
def test_moving_to_a_course_that_is_not_an_id_asks_again(
    ops: Client, student: Any, course: Course, chosen: str
) -> None:
    purchase = buy(student, course, "pay_move")
    page = act(ops, "move_to_course", [purchase], confirm="yes", course=chosen)
    assert page.status_code == 200 and "New course" in page.text  # the choice again, nothing moved
    assert Purchase.objects.get().course_id == course.pk


@pytest.mark.parametrize("object_id", ["abc", "1.5", "9" * 40])
def test_a_student_page_for_an_id_that_is_not_one_is_not_a_500(ops: Client, object_id: str) -> None:
    response = ops.get(f"/admin/auth/user/{object_id}/change/", follow=True)
    assert response.status_code == 200 and "Perhaps it was deleted?" in response.text


def test_a_payment_id_with_a_line_break_is_listed_and_traced(ops: Client, student: Any, course: Course) -> None:
    """The provider's id is stored as sent (a signed webhook with a newline in it is accepted), so every
    page that links its trace must still render, and the link must lead to it."""
    payment_id = "pay\nwith\r\nbreaks/and ?#%"
    with deliver_outbox():
        buy(student, course, payment_id)
    for page in ("/admin/purchases/purchase/", "/admin/outbox/outboxevent/", "/admin/outbox/delivery/"):
        response = ops.get(page)
        assert response.status_code == 200, page
    link = reverse("admin:outbox_outboxevent_trace", args=[payment_id])
    assert link in ops.get("/admin/purchases/purchase/").content.decode().replace("&amp;", "&")
    trace = ops.get(link)
    assert trace.status_code == 200 and "purchase.created" in trace.text
