"""The student page in a real browser shows session times in the student's zone, and follows a
reschedule live: API -> session.rescheduled -> relay -> socket -> refetch, through real processes."""

import re
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from outbox.testing import deliver_pending
from purchases.models import Course
from purchases.services import student_profile_update
from tests.support.browser import chromium
from tests.support.processes import Processes
from tests.support.trainers import available_trainer
from tests.support.webhooks import http
from tests.test_sched_api import scheduled

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def test_the_page_shows_local_times_and_follows_a_reschedule_live(
    student: Any, course: Course, processes: Processes, request: pytest.FixtureRequest
) -> None:
    available_trainer("Ada", 3, tz="Europe/Berlin", windows=[(d, time(10), time(12)) for d in range(7)])
    student_profile_update(student_id=student.pk, timezone_name="America/New_York", actor="test")
    purchase = scheduled(student, course, "pay_1")
    deliver_pending()
    first = purchase.sessions.order_by("number").first()
    assert first is not None
    ws_host = processes.server("ws")
    host = processes.web(REALTIME_WS_URL=f"ws://{ws_host}")
    processes.relay()
    processes.worker()

    with chromium(request.node.name) as browser:
        page = browser.new_page(timezone_id="Asia/Tokyo")  # the profile's zone wins over the browser's
        page.goto(f"http://{host}/?token={student.auth_token.key}")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        expect(page.locator("#zone")).to_have_text("America/New_York")
        item = page.locator(f".session[data-starts-at='{first.starts_at.isoformat()}']")
        ny = first.starts_at.astimezone(ZoneInfo("America/New_York"))
        expect(item).to_contain_text(f"{ny:%I}:{ny:%M}".lstrip("0"))  # Berlin 10:00 is 04:00 in New York
        expect(item).to_contain_text(re.compile(r"\bE[SD]T\b"))  # the zone is shown

        status, moved = http(
            host,
            f"/api/v1/me/sessions/{first.pk}/reschedule",
            body=b"",
            headers={"Authorization": f"Token {student.auth_token.key}"},
        )
        assert status == 200, moved
        new = page.locator(f".session[data-starts-at='{moved['starts_at']}']")
        expect(new).to_have_count(1, timeout=5000)  # without a reload
        expect(item).to_have_count(0)
        moved_ny = datetime.fromisoformat(moved["starts_at"]).astimezone(ZoneInfo("America/New_York"))
        expect(new).to_contain_text(f"{moved_ny:%I}:{moved_ny:%M}".lstrip("0"))
