"""The payment webhook: signatures, validation, idempotency."""

import json
import time
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from outbox.models import OutboxEvent
from purchases.models import Course, Purchase
from tests.support.webhooks import signature, webhook_body

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/payments/webhook"


def post(client: Client, body: bytes, sig: str | None) -> Any:
    headers = {"Payment-Signature": sig} if sig is not None else {}
    return client.post(URL, data=body, content_type="application/json", headers=headers)


def test_new_payment_creates_one_purchase_and_its_event(client: Client, student: Any, course: Course) -> None:
    body = webhook_body(payment_id="pay_1", student_id=student.pk, course_id=course.pk)
    response = post(client, body, signature(body))
    assert response.status_code == 200
    purchase = Purchase.objects.get()
    assert response.json() == {"purchase_id": purchase.pk, "status": "pending"}
    event = OutboxEvent.objects.get()
    assert (event.type, event.actor, event.correlation_id) == ("purchase.created", "webhook", "pay_1")


def test_duplicates_return_the_same_purchase_and_emit_nothing(client: Client, student: Any, course: Course) -> None:
    first = webhook_body(payment_id="pay_1", student_id=student.pk, course_id=course.pk)
    other_event_same_payment = webhook_body(
        payment_id="pay_1", student_id=student.pk, course_id=course.pk, event_id="evt_other"
    )
    responses = [post(client, b, signature(b)) for b in (first, first, other_event_same_payment, first)]
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["purchase_id"] for r in responses}) == 1
    assert Purchase.objects.count() == 1
    assert OutboxEvent.objects.count() == 1


@pytest.mark.parametrize(
    "make_sig",
    [
        lambda body: None,
        lambda body: "",
        lambda body: "garbage",
        lambda body: signature(body, secret="wrong"),
        lambda body: signature(body + b" "),
        lambda body: signature(body, timestamp=int(time.time()) - 301),
        lambda body: signature(body, timestamp=int(time.time()) + 301),
        lambda body: "t=notanumber,v1=abc",
    ],
    ids=["missing", "empty", "garbage", "wrong-secret", "other-body", "too-old", "too-new", "bad-t"],
)
def test_bad_signatures_are_rejected(client: Client, student: Any, course: Course, make_sig: Any) -> None:
    body = webhook_body(payment_id="pay_1", student_id=student.pk, course_id=course.pk)
    response = post(client, body, make_sig(body))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not Purchase.objects.exists()


@override_settings(PAYMENT_WEBHOOK_SECRETS=["new_secret", "old_secret"])
def test_any_configured_secret_and_any_v1_value_is_accepted(client: Client, student: Any, course: Course) -> None:
    body = webhook_body(payment_id="pay_1", student_id=student.pk, course_id=course.pk)
    old = signature(body, secret="old_secret")
    stale_and_good = f"{old},v1={'0' * 64}"
    assert post(client, body, stale_and_good).status_code == 200
    t, v1 = signature(body, secret="new_secret").split(",")
    assert post(client, body, f"{t},v1={'d' * 64},{v1}").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        json.dumps({"id": "e", "type": "payment.succeeded", "created": 1, "data": {}}).encode(),
        json.dumps(
            {
                "id": "e",
                "type": "payment.succeeded",
                "created": 1,
                "data": {"payment_id": "p", "student_id": "x", "course_id": 1, "amount": "1", "currency": "EUR"},
            }
        ).encode(),
        json.dumps(
            {
                "id": "e",
                "type": "payment.succeeded",
                "created": 1,
                "data": {"payment_id": "p", "student_id": 1, "course_id": 1, "amount": "-5", "currency": "EURO"},
            }
        ).encode(),
        b"\xff\xfe",
    ],
)
def test_malformed_bodies_get_400(client: Client, body: bytes) -> None:
    response = post(client, body, signature(body))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_body"


def test_unknown_student_or_course_gets_422(client: Client, student: Any, course: Course) -> None:
    for student_id, course_id, code in [(999999, course.pk, "unknown_student"), (student.pk, 999999, "unknown_course")]:
        body = webhook_body(payment_id=f"pay_{code}", student_id=student_id, course_id=course_id)
        response = post(client, body, signature(body))
        assert response.status_code == 422
        assert response.json()["error"]["code"] == code
    assert not Purchase.objects.exists()


def test_a_payment_takes_four_statements_and_its_retry_one(client: Client, student: Any, course: Course) -> None:
    """The webhook's round trips are its cost: one lookup (event, purchase, student, course), the payment
    with its purchase, the event, the record; a retry of a recorded event only the lookup."""
    body = webhook_body(payment_id="pay_1", student_id=student.pk, course_id=course.pk)
    for expected in (4, 1):
        with CaptureQueriesContext(connection) as captured:
            response = post(client, body, signature(body))
        assert response.status_code == 200
        statements = [q["sql"] for q in captured.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
        assert len(statements) == expected, statements
