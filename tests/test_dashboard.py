"""The cached dashboard: hit on the second read, fresh after the relay, safe against the fill race."""

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from allocation.models import Trainer
from dashboard.selectors import DASHBOARD_VIEW, dashboard_build
from outbox import readcache
from outbox.testing import deliver_pending
from purchases.models import Course
from tests.support.purchases import buy

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/me/dashboard"


def auth(student: Any) -> dict[str, str]:
    return {"Authorization": f"Token {student.auth_token.key}"}


def test_requires_a_token(client: Client) -> None:
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_second_read_is_served_from_the_cache(client: Client, student: Any, course: Course) -> None:
    buy(student, course)
    first = client.get(URL, headers=auth(student))
    with CaptureQueriesContext(connection) as queries:
        second = client.get(URL, headers=auth(student))
    assert first["X-Cache"] == "miss" and second["X-Cache"] == "hit"
    assert second.json() == first.json()
    # Only the token lookup touches the database on a hit.
    assert len(queries) == 1, [q["sql"] for q in queries]


def test_reflects_an_event_as_soon_as_the_relay_delivered_it(
    client: Client, student: Any, course: Course, trainer: Trainer
) -> None:
    buy(student, course)
    before = client.get(URL, headers=auth(student)).json()
    assert before["seq"] == 1 and before["purchases"][0]["trainer"] is None
    deliver_pending()
    after = client.get(URL, headers=auth(student))
    body = after.json()
    assert after["X-Cache"] == "miss"
    assert body["seq"] == 3
    (purchase,) = body["purchases"]
    assert purchase["status"] == "active"
    assert purchase["trainer"] == {"id": trainer.pk, "name": trainer.name}
    assert len(purchase["sessions"]) == course.sessions_count


def test_a_stale_fill_after_the_invalidation_is_refused(student: Any, course: Course) -> None:
    """The fill race: a read built before an event's COMMIT finishes after the relay invalidated."""
    buy(student, course)
    stale_seq, _ = dashboard_build(student=student)  # the slow reader's snapshot: seq 1
    buy(student, course, "pay_2")  # seq 2 commits ...
    readcache.invalidate_students({student.pk: 2})  # ... and the relay invalidates

    def stale_build() -> tuple[int, bytes]:
        return stale_seq, b'{"stale": true}'

    seq, _, hit = readcache.fetch(student_id=student.pk, view=DASHBOARD_VIEW, build=stale_build)
    assert (seq, hit) == (1, False)  # the slow reader still answers its own request ...

    def fresh_build() -> tuple[int, bytes]:
        return 2, b'{"fresh": true}'

    # ... but its fill was refused: the next reader rebuilds instead of reading the stale view.
    assert readcache.fetch(student_id=student.pk, view=DASHBOARD_VIEW, build=fresh_build) == (
        2,
        b'{"fresh": true}',
        False,
    )
    assert readcache.fetch(student_id=student.pk, view=DASHBOARD_VIEW, build=stale_build) == (
        2,
        b'{"fresh": true}',
        True,
    )


def test_a_fill_that_lands_before_the_invalidation_is_dropped_by_it(student: Any) -> None:
    readcache.fetch(student_id=student.pk, view=DASHBOARD_VIEW, build=lambda: (1, b"old"))
    assert readcache.fetch(student_id=student.pk, view=DASHBOARD_VIEW, build=lambda: (9, b"x"))[2] is True
    readcache.invalidate_students({student.pk: 2})
    assert readcache.fetch(student_id=student.pk, view=DASHBOARD_VIEW, build=lambda: (2, b"new")) == (2, b"new", False)
