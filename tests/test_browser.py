"""The student page in a real browser (Debian's Chromium, driven by Playwright): live updates from an
admin change, and a resume with ?after=<last seq> after the socket's server was killed."""

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from allocation.models import Trainer
from purchases.models import Course
from purchases.services import purchase_create
from tests.chaos.harness import kill9
from tests.support.browser import chromium
from tests.support.processes import Processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def admin_add_purchase(page: Page, base: str, *, payment_id: str, student_id: int, course_id: int) -> None:
    page.goto(f"{base}/admin/purchases/purchase/add/")
    page.fill("#id_payment_id", payment_id)
    page.fill("#id_student", str(student_id))  # a raw-id field: students are many
    page.select_option("#id_course", str(course_id))
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("purchase")


def test_the_page_updates_live_and_resumes_after_the_server_dies(
    student: Any,
    course: Course,
    trainer: Trainer,
    processes: Processes,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API keeps an event loop here
    get_user_model().objects.create_superuser("operator", "op@example.com", "operator-password")
    # As in production: the page and the admin from `web`, the socket from `ws` (on its own port here).
    ws_host = processes.server("ws")
    ws_port = int(ws_host.rsplit(":", 1)[1])
    base = f"http://{processes.web(REALTIME_WS_URL=f'ws://{ws_host}')}"
    processes.relay()
    processes.worker()

    with chromium(request.node.name) as browser:
        student_page = browser.new_page()
        student_page.goto(f"{base}/?token={student.auth_token.key}")
        state = student_page.locator("#connection")
        expect(state).to_have_attribute("data-state", "live")
        expect(student_page.locator("#empty")).to_be_visible()

        admin_page = browser.new_page()
        admin_page.goto(f"{base}/admin/login/")
        admin_page.fill("#id_username", "operator")
        admin_page.fill("#id_password", "operator-password")
        admin_page.click("input[type=submit]")
        admin_add_purchase(admin_page, base, payment_id="pay_admin_1", student_id=student.pk, course_id=course.pk)

        # Without a reload: the purchase, its trainer and its sessions, within two seconds.
        purchase = student_page.locator(".purchase").first
        expect(purchase.locator(".trainer")).to_have_text(f"Trainer: {trainer.name}", timeout=2000)
        expect(purchase.locator(".session")).to_have_count(course.sessions_count, timeout=2000)

        # The socket's server dies: the page says so, events happen meanwhile, the page catches up.
        kill9(processes.procs["ws"])
        expect(state).to_have_attribute("data-state", "reconnecting", timeout=5000)
        purchase_create(
            payment_id="pay_while_down",
            student_id=student.pk,
            course_id=course.pk,
            amount=course.price,
            currency="EUR",
            actor="test",
        )
        processes.server("ws-again", ws_port)
        expect(state).to_have_attribute("data-state", "live", timeout=15000)
        expect(student_page.locator(".purchase")).to_have_count(2, timeout=5000)
        for item in student_page.locator(".purchase").all():
            expect(item.locator(".session")).to_have_count(course.sessions_count, timeout=5000)
        seqs = [int(s) for s in student_page.locator("#events li").evaluate_all("els => els.map(e => e.dataset.seq)")]
        assert sorted(seqs) == list(range(1, 7))  # both chains, nothing missed, nothing twice
