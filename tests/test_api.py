"""The student API and the webhook's edges: events feed, courses, one error shape, refunds, unknown types."""

import json
from typing import Any

import pytest
from django.test import Client

from outbox.models import OutboxEvent
from purchases.models import Course, ProviderEvent, Purchase
from tests.support.webhooks import signature, webhook_body

pytestmark = pytest.mark.django_db(transaction=True)
WEBHOOK = "/api/v1/payments/webhook"


def auth(student: Any) -> dict[str, str]:
    return {"Authorization": f"Token {student.auth_token.key}"}


def send(client: Client, body: bytes) -> Any:
    return client.post(
        WEBHOOK, data=body, content_type="application/json", headers={"Payment-Signature": signature(body)}
    )


def test_events_feed_pages_after_a_cursor(client: Client, make_student: Any, course: Course) -> None:
    alice, bob = make_student(), make_student()
    for i in range(3):
        send(client, webhook_body(payment_id=f"pay_a{i}", student_id=alice.pk, course_id=course.pk))
    send(client, webhook_body(payment_id="pay_b", student_id=bob.pk, course_id=course.pk))
    page = client.get("/api/v1/me/events?after=1", headers=auth(alice)).json()
    assert [e["seq"] for e in page["events"]] == [2, 3] and page["seq"] == 3
    assert {e["data"]["payment_id"] for e in page["events"]} == {"pay_a1", "pay_a2"}  # never bob's
    first = page["events"][0]
    assert set(first) == {"id", "seq", "type", "occurred_at", "data"}
    empty = client.get("/api/v1/me/events?after=3", headers=auth(alice)).json()
    assert empty == {"events": [], "seq": 3}
    assert client.get("/api/v1/me/events", headers=auth(alice)).json()["seq"] == 3


@pytest.mark.parametrize("after", ["-1", "abc", "1.5", "9" * 30])
def test_events_feed_rejects_a_bad_cursor(client: Client, student: Any, after: str) -> None:
    response = client.get(f"/api/v1/me/events?after={after}", headers=auth(student))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_courses(client: Client, student: Any, course: Course) -> None:
    (listed,) = client.get("/api/v1/courses", headers=auth(student)).json()
    assert listed["id"] == course.pk and listed["title"] == course.title and listed["price"] == "240.00"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/api/v1/nothing-here", 404, "not_found"),
        ("get", "/api/v1/me/dashboard", 401, "not_authenticated"),
        ("get", "/api/v1/me/events", 401, "authentication_failed"),
        ("delete", "/api/v1/me/dashboard", 405, "method_not_allowed"),
        ("get", WEBHOOK, 405, "method_not_allowed"),
    ],
)
def test_every_error_has_one_json_shape(client: Client, method: str, path: str, status: int, code: str) -> None:
    headers = {"Authorization": "Token wrong"} if code == "authentication_failed" else {}
    if status == 405:
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        user = get_user_model().objects.create_user(username="x")
        headers = {"Authorization": f"Token {Token.objects.create(user=user).key}"}
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"] and "details" in body["error"]


def test_unknown_event_types_are_acknowledged_and_recorded(client: Client, student: Any, course: Course) -> None:
    body = webhook_body(payment_id="pay_x", student_id=student.pk, course_id=course.pk, type="charge.disputed")
    response = send(client, body)
    assert response.status_code == 200 and response.json() == {"ignored": True}
    assert send(client, body).json() == {"ignored": True}
    recorded = ProviderEvent.objects.get()
    assert (recorded.type, recorded.outcome) == ("charge.disputed", "ignored")
    assert not Purchase.objects.exists() and not OutboxEvent.objects.exists()


def test_a_refund_webhook_refunds_the_purchase_once(client: Client, student: Any, course: Course) -> None:
    paid = send(client, webhook_body(payment_id="pay_1", student_id=student.pk, course_id=course.pk)).json()
    refund = webhook_body(
        payment_id="pay_1", student_id=student.pk, course_id=course.pk, type="payment.refunded", event_id="evt_refund"
    )
    for _ in range(3):
        response = send(client, refund)
        assert response.json() == {"purchase_id": paid["purchase_id"], "status": "refunded"}
    assert OutboxEvent.objects.filter(type="purchase.refunded").count() == 1


def test_a_refund_for_an_unknown_payment_is_422_so_the_provider_retries(
    client: Client, student: Any, course: Course
) -> None:
    body = webhook_body(payment_id="pay_never", student_id=student.pk, course_id=course.pk, type="payment.refunded")
    response = send(client, body)
    assert response.status_code == 422 and response.json()["error"]["code"] == "unknown_payment"
    assert not ProviderEvent.objects.exists()  # not recorded: a retry after the payment arrives will apply it


def test_a_body_over_the_limit_is_413(client: Client) -> None:
    body = json.dumps({"padding": "x" * 70_000}).encode()
    response = send(client, body)
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_schema_and_docs_are_served(client: Client) -> None:
    schema = client.get("/api/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    assert "Payment-Signature" in schema.content.decode()
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.parametrize("after", ["²", "٣", "1\x00"])
def test_events_feed_rejects_non_ascii_digits(client: Client, student: Any, after: str) -> None:
    response = client.get("/api/v1/me/events", {"after": after}, headers=auth(student))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


def test_a_nul_character_is_400_in_a_validated_field_and_kept_elsewhere(
    client: Client, student: Any, course: Course
) -> None:
    in_id = json.dumps({"id": "evt\u0000", "type": "charge.other", "created": 1, "data": {}}).encode()
    response = send(client, in_id)
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_body"
    assert not ProviderEvent.objects.exists()
    in_data = json.dumps({"id": "e", "type": "charge.other", "created": 1, "data": {"k\u0000": ["x\u0000"]}}).encode()
    assert send(client, in_data).status_code == 200
    recorded = ProviderEvent.objects.get()
    assert bytes(recorded.raw_body or b"") == in_data
    assert recorded.payload["data"] == {"k\\u0000": ["x\\u0000"]}  # jsonb holds the escape as text
