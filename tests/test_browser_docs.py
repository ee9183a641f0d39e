"""/api/docs/ in a real browser with the network cut off: Swagger UI comes from the pinned sidecar
package, shows every operation, renders the signature scheme whole, and links the WebSocket contract."""

from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from playwright.sync_api import Route, expect

from tests.support.browser import chromium
from tests.support.processes import Processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def test_api_docs_work_offline_and_say_the_truth(processes: Processes, request: Any) -> None:
    base = f"http://{processes.web()}"
    outside: list[str] = []

    def only_our_server(route: Route) -> None:
        # The network is cut off: anything not served by our own `web` process fails, as offline.
        if urlsplit(route.request.url).netloc == urlsplit(base).netloc:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    with chromium(request.node.name) as browser:
        context = browser.new_context()
        context.route("**/*", only_our_server)
        page = context.new_page()
        page.goto(f"{base}/api/docs/")
        operations = page.locator(".opblock")
        expect(operations).to_have_count(7, timeout=15000)
        for path in (
            "/api/v1/payments/webhook",
            "/api/v1/me/dashboard",
            "/api/v1/me/events",
            "/api/v1/me/profile",
            "/api/v1/me/sessions/{session_id}/reschedule",
            "/api/v1/courses",
        ):
            expect(page.locator(".opblock-summary-path", has_text=path).first).to_be_visible()

        page.locator(".opblock-summary-path", has_text="/api/v1/payments/webhook").click()
        webhook = page.locator(".opblock.is-open")
        # The placeholders survive Markdown -> HTML (a `<t>` would have been swallowed as a tag).
        expect(webhook).to_contain_text("Payment-Signature: t={t},v1={hex}")
        expect(webhook).to_contain_text("{t}.{raw body}")
        # Realistic examples, not generated ones (`"created": 9223372036854776000`, `"amount": "5."`).
        expect(webhook).to_contain_text('"amount": "240.00"')
        expect(webhook).not_to_contain_text("9223372036854776000")
        expect(webhook).to_contain_text("not_a_student")  # the error shape per status

        link = page.locator("a", has_text="WebSocket event stream").first
        expect(link).to_be_visible()
        page.goto(urljoin(page.url, link.get_attribute("href") or ""))  # Swagger UI opens it in a new tab
        expect(page).to_have_url(f"{base}/api/docs/websocket/")
        for text in ("/ws/events/?token={key}", "4401", "4429", "4400", "4410", '{"type": "ping"}', "after={seq}"):
            expect(page.locator("body")).to_contain_text(text)

        assert outside == []  # Swagger UI and the WebSocket page asked nothing of the internet
        page.goto(f"{base}/api/redoc/")
        expect(page.locator("h2", has_text="Payment provider webhook")).to_be_visible(timeout=15000)
        context.close()
    # ReDoc renders from local files too; only its cosmetic sidebar logo is asked of a CDN (and hidden).
    assert set(outside) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
