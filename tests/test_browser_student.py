"""The student page never lies, in a real browser: the badge turns "reconnecting…" the moment a ping
deadline passes or the browser goes offline; each status has its own words; no "no courses" after a
purchase event; a bad or revoked token gets a sign-in message meant for a student."""

import re
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect
from rest_framework.authtoken.models import Token

from allocation.models import Trainer
from flows.refunds import purchase_refund
from outbox.relay import Relay
from outbox.testing import deliver_outbox, deliver_pending
from purchases.models import Course
from tests.support.browser import chromium
from tests.support.processes import Processes
from tests.support.purchases import buy
from tests.support.trainers import available_trainer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]
SOCKET = re.compile(r".*/ws/events/.*")


def stack(processes: Processes, *, relay: bool = True, **web_env: str) -> str:
    """`web` (the page and the API) and `ws` (the socket) as in production, with a relay and a worker.

    Playwright's sync API runs an event loop in the test's thread, so nothing async (the relay's push)
    can run in-test while a page is open: real processes deliver instead.
    """
    ws_host = processes.server("ws")
    if relay:
        processes.relay()
        processes.worker()
    return f"http://{processes.web(REALTIME_WS_URL=f'ws://{ws_host}', **web_env)}"


def open_page(page: Page, base: str, student: Any) -> None:
    page.goto(f"{base}/?token={student.auth_token.key}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=10000)


def test_the_badge_says_reconnecting_the_moment_a_pong_is_late(
    processes: Processes, student: Any, request: Any
) -> None:
    base = stack(processes, relay=False, STUDENT_PAGE_PING_SECONDS="0.5", STUDENT_PAGE_PONG_TIMEOUT_SECONDS="0.5")
    swallow_pongs = {"on": False}

    def half_open(ws: WebSocketRoute) -> None:
        # The connection stays open but nothing comes back, as on a dead mobile link.
        server = ws.connect_to_server()
        server.on_message(lambda m: None if swallow_pongs["on"] and "pong" in str(m) else ws.send(m))

    with chromium(request.node.name) as browser:
        page = browser.new_page()
        page.route_web_socket(SOCKET, half_open)
        open_page(page, base, student)
        swallow_pongs["on"] = True
        # Ping every 0.5 s, pong within 0.5 s: "reconnecting…" within about a second, not 35 s later.
        expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting", timeout=3000)
        expect(page.locator("#connection")).to_have_text("reconnecting…")
        swallow_pongs["on"] = False
        expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=15000)


def test_offline_in_the_browser_shows_reconnecting_and_catches_up_when_back(
    processes: Processes, student: Any, course: Course, trainer: Trainer, request: Any
) -> None:
    base = stack(processes)  # the default 20 s ping: the browser's own offline signal must do it
    with chromium(request.node.name) as browser:
        context = browser.new_context()
        page = context.new_page()
        open_page(page, base, student)
        context.set_offline(True)
        expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting", timeout=3000)
        buy(student, course, "pay_while_offline")  # the relay and the worker deliver it meanwhile
        context.set_offline(False)
        expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=15000)
        purchase = page.locator(".purchase")
        expect(purchase).to_have_count(1, timeout=10000)
        expect(purchase.locator(".trainer")).to_have_text(f"Trainer: {trainer.name}")
        expect(page.locator("#empty")).to_be_hidden()
        context.close()


def test_each_status_has_its_own_words(processes: Processes, student: Any, request: Any) -> None:
    available_trainer("Solo", 1)
    titles = ["Active course", "Waitlisted course", "Refunded course", "Pending course"]
    courses = {t: Course.objects.create(title=t, price="10.00", currency="EUR", sessions_count=2) for t in titles}
    for n, title in enumerate(titles[:3]):
        with deliver_outbox():
            buy(student, courses[title], f"pay_{n}")
    purchase_refund(payment_id="pay_2", actor="test")
    deliver_pending()
    buy(student, courses["Pending course"], "pay_3")
    Relay().drain()  # delivered to the page, its handler queued for a worker that never runs: pending
    base = stack(processes, relay=False)
    with chromium(request.node.name) as browser:
        page = browser.new_page()
        open_page(page, base, student)

        def card(title: str) -> Any:
            return page.locator(".purchase", has_text=title)

        expect(card("Pending course")).to_be_visible(timeout=10000)
        active = card("Active course")
        expect(active.locator(".trainer")).to_have_text("Trainer: Solo")
        expect(active.locator(".session")).to_have_count(2)
        waitlisted = card("Waitlisted course")
        expect(waitlisted).to_contain_text("On the waiting list")
        expect(waitlisted.locator(".trainer")).to_have_count(0)
        refunded = card("Refunded course")
        expect(refunded).to_contain_text("Refunded: this course and its sessions are cancelled.")
        expect(refunded.locator(".trainer")).to_have_count(0)
        expect(refunded.locator(".session")).to_have_count(0)
        pending = card("Pending course")
        expect(pending).to_contain_text("Payment received: finding you a trainer")
        expect(page.locator("body")).not_to_contain_text("not allocated yet")


def test_never_no_courses_after_a_purchase_event(
    processes: Processes, student: Any, course: Course, trainer: Trainer, request: Any
) -> None:
    base = stack(processes)
    with chromium(request.node.name) as browser:
        page = browser.new_page()
        open_page(page, base, student)
        expect(page.locator("#empty")).to_be_visible()
        # Record the page's state at every change of "Last event seen", from inside the page.
        page.evaluate(
            """() => {
                window.lies = [];
                new MutationObserver(() => {
                    if (!document.getElementById("empty").hidden) window.lies.push(document.body.innerText);
                }).observe(document.getElementById("last-seq"), {childList: true, characterData: true, subtree: true});
            }"""
        )
        buy(student, course, "pay_1")
        expect(page.locator(".purchase .trainer")).to_have_text(f"Trainer: {trainer.name}", timeout=10000)
        expect(page.locator("#last-seq")).not_to_have_text("0")
        assert page.evaluate("window.lies") == []
        expect(page.locator("#empty")).to_be_hidden()


def test_a_bad_or_revoked_token_gets_a_sign_in_message_for_a_student(
    processes: Processes, student: Any, request: Any
) -> None:
    base = stack(processes)
    with chromium(request.node.name) as browser:
        page = browser.new_page()
        page.goto(f"{base}/?token=not-a-token")
        expect(page.locator("#signin-message")).to_contain_text("Please sign in again", timeout=10000)
        expect(page.locator("#connection")).to_have_text("signed out")
        expect(page.locator("body")).not_to_contain_text("dev.py")

        open_page(page, base, student)
        Token.objects.filter(user=student).delete()  # revoked
        Token.objects.create(user=student)
        page.reload()
        expect(page.locator("#signin-message")).to_contain_text("Please sign in again", timeout=10000)
        expect(page.locator("#student")).to_be_hidden()
