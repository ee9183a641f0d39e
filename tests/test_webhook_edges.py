"""The webhook's edges (issue 13): any signed RFC 8259 body with valid `data` is recorded with its exact
bytes; anything else is a clear 400; conflicting payments, events and refunds are reported, not swallowed."""

import io
import time
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from outbox.models import OutboxEvent
from purchases.models import Course, Payment, ProviderEvent, Purchase
from purchases.provider_body import MAX_DEPTH
from tests.support.webhooks import signature, webhook_body

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/payments/webhook"


def send(client: Client, body: bytes, sig: str | None = None) -> Any:
    headers = {"Payment-Signature": signature(body) if sig is None else sig}
    return client.post(URL, data=body, content_type="application/json", headers=headers)


def with_extra(student: Any, course: Course, extra: str, payment_id: str = "pay_1") -> bytes:
    """A valid payment whose body also carries `extra` (raw JSON text) in an unvalidated field."""
    body = webhook_body(payment_id=payment_id, student_id=student.pk, course_id=course.pk)
    return body[:-1] + b', "note": ' + extra.encode() + b"}"


EXTRAS = {
    "lone-surrogate": r'"\ud83d"',
    "nul": r'"a\u0000b"',
    "beyond-float": "1e400",
    "below-float": "-1e-400",
    "5000-digit-int": "9" * 5000,
    "nested-to-the-limit": "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1),
    "long-string": '"' + "x" * 60_000 + '"',
    "surrogate-key": r'{"\udfff": [1.5, true, null]}',
}


@pytest.mark.parametrize("extra", EXTRAS.values(), ids=EXTRAS.keys())
def test_a_signed_payment_is_recorded_whatever_its_other_fields_hold(
    client: Client, student: Any, course: Course, extra: str
) -> None:
    body = with_extra(student, course, extra)
    response = send(client, body)
    assert response.status_code == 200, response.content
    assert response.json()["purchase_id"] == Purchase.objects.get().pk
    recorded = ProviderEvent.objects.get()
    assert bytes(recorded.raw_body or b"") == body  # the exact bytes
    assert recorded.outcome == "applied" and recorded.payload["data"]["payment_id"] == "pay_1"
    assert send(client, body).status_code == 200  # the provider's retry: same answer, nothing new
    assert OutboxEvent.objects.count() == 1


def test_the_jsonb_copy_keeps_what_jsonb_cannot_hold_as_text(client: Client, student: Any, course: Course) -> None:
    body = with_extra(student, course, r'{"s": "\ud83d\u0000", "big": 1e400, "tiny": 1e-400, "ok": 2.5}')
    assert send(client, body).status_code == 200
    assert ProviderEvent.objects.get().payload["note"] == {
        "s": "\\ud83d\\u0000",
        "big": "1E+400",
        "tiny": "1E-400",
        "ok": 2.5,
    }


MALFORMED = {
    "nan": b'{"id": "e", "x": NaN}',
    "infinity": b'{"id": "e", "x": Infinity}',
    "minus-infinity": b'{"id": "e", "x": -Infinity}',
    "trailing-bytes": b'{"id": "e"} x',
    "two-objects": b"{}{}",
    "too-deep": b'{"x": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}",
    "deep-like-a-recursion-bomb": b"[" * 30_000 + b"]" * 30_000,
    "utf-16": '{"id": "e"}'.encode("utf-16"),
    "bom": b"\xef\xbb\xbf{}",
    "single-quotes": b"{'id': 'e'}",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_body_that_is_not_rfc8259_json_is_400_malformed_body(client: Client, body: bytes) -> None:
    response = send(client, body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "malformed_body"
    assert not ProviderEvent.objects.exists()


def test_brackets_inside_strings_do_not_count_as_nesting(client: Client, student: Any, course: Course) -> None:
    assert send(client, with_extra(student, course, '"' + "[{" * 1000 + '"')).status_code == 200


def bad_headers(body: bytes) -> dict[str, str]:
    good = signature(body)
    t, v1 = good.split(",")
    now = int(time.time())
    return {
        "t-309-digits": f"t={'9' * 309},{v1}",
        "t-4300-digits": f"t={'1' * 4300},{v1}",
        "t-13-digits": f"t={'0' * 13},{v1}",
        "t-underscores": f"t=1_796_000_000,{v1}",
        "t-plus-sign": f"t=+{now},{v1}",
        "t-arabic-digits": f"t={str(now).translate(str.maketrans('0123456789', '٠١٢٣٤٥٦٧٨٩'))},{v1}",
        "t-twice": f"{t},{t},{v1}",
        "v1-short": f"{t},v1={'a' * 63}",
        "v1-not-hex": f"{t},v1={'g' * 64}",
        "unknown-part": f"{good},v0=abc",
        "too-long": good + f",v1={'0' * 64}" * 10,
        "empty-part": f"{good},",
    }


@pytest.mark.parametrize("case", bad_headers(b"").keys())
def test_a_malformed_signature_header_is_400_invalid_signature(
    client: Client, student: Any, course: Course, case: str
) -> None:
    body = webhook_body(payment_id="pay_1", student_id=student.pk, course_id=course.pk)
    response = send(client, body, bad_headers(body)[case])
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not Purchase.objects.exists()


def test_uppercase_hex_and_spaces_after_commas_are_accepted(client: Client, student: Any, course: Course) -> None:
    body = webhook_body(payment_id="pay_1", student_id=student.pk, course_id=course.pk)
    t, v1 = signature(body).split(",")
    assert send(client, body, f"{t}, v1={v1[3:].upper()}").status_code == 200


def metric(client: Client, code: str) -> float:
    for line in client.get("/metrics").content.decode().splitlines():
        if line.startswith(f'payment_webhook_conflicts_total{{code="{code}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("student_id", None), ("course_id", None), ("amount", "1.00"), ("currency", "USD")],
)
def test_the_same_payment_with_other_terms_is_409_and_recorded(
    client: Client, make_student: Any, course: Course, field: str, value: Any
) -> None:
    alice, bob = make_student(), make_student()
    other_course = Course.objects.create(title="Other", price=Decimal("1"))
    first = webhook_body(payment_id="pay_1", student_id=alice.pk, course_id=course.pk)
    purchase_id = send(client, first).json()["purchase_id"]
    before = metric(client, "payment_conflict")
    replacement = {"student_id": bob.pk, "course_id": other_course.pk}.get(field, value)
    conflicting = first.replace(b'"evt_pay_1"', b'"evt_2"')
    conflicting = conflicting.replace(_json_field(first, field), _json_field(first, field, replacement))
    for _ in range(2):  # the provider's retry gets the same answer
        response = send(client, conflicting)
        assert response.status_code == 409, response.content
        error = response.json()["error"]
        assert error["code"] == "payment_conflict"
        assert error["details"]["purchase_id"] == purchase_id and list(error["details"]["fields"]) == [
            field[:-3] if field.endswith("_id") else field
        ]
    purchase = Purchase.objects.select_related("payment").get()  # the first purchase, unchanged
    assert (purchase.pk, purchase.student_id, purchase.course_id) == (purchase_id, alice.pk, course.pk)
    assert (purchase.payment.amount, purchase.payment.currency) == (Decimal("240.00"), "EUR")
    assert OutboxEvent.objects.count() == 1
    attempt = ProviderEvent.objects.get(provider_event_id="evt_2")
    assert attempt.outcome == "conflict" and bytes(attempt.raw_body or b"") == conflicting
    assert metric(client, "payment_conflict") == before + 2
    out = io.StringIO()
    call_command("trace", "pay_1", stdout=out)
    assert "evt_2: conflict" in out.getvalue() and conflicting.decode() in out.getvalue()


def _json_field(body: bytes, field: str, value: Any = ...) -> bytes:
    import json

    data = json.loads(body)["data"]
    return f'"{field}": {json.dumps(data[field] if value is ... else value)}'.encode()


def test_the_same_event_id_with_another_body_is_409_and_changes_nothing(
    client: Client, student: Any, course: Course
) -> None:
    first = webhook_body(payment_id="pay_1", student_id=student.pk, course_id=course.pk, event_id="evt_1")
    assert send(client, first).status_code == 200
    other = webhook_body(payment_id="pay_2", student_id=student.pk, course_id=course.pk, event_id="evt_1")
    response = send(client, other)
    assert response.status_code == 409 and response.json()["error"]["code"] == "event_conflict"
    assert Purchase.objects.count() == 1 and not Payment.objects.filter(provider_payment_id="pay_2").exists()
    assert bytes(ProviderEvent.objects.get().raw_body or b"") == first
    assert metric(client, "event_conflict") >= 1


def test_a_refund_that_does_not_match_its_purchase_is_422_and_refunds_nothing(
    client: Client, make_student: Any, course: Course
) -> None:
    alice, bob = make_student(), make_student()
    send(client, webhook_body(payment_id="pay_1", student_id=alice.pk, course_id=course.pk))
    refund = webhook_body(
        payment_id="pay_1", student_id=bob.pk, course_id=course.pk, type="payment.refunded", event_id="evt_r"
    )
    for _ in range(2):
        response = send(client, refund)
        assert response.status_code == 422, response.content
        assert response.json()["error"]["code"] == "refund_mismatch"
    assert Purchase.objects.get().status == "pending"
    assert not OutboxEvent.objects.filter(type="purchase.refunded").exists()
    assert ProviderEvent.objects.get(provider_event_id="evt_r").outcome == "mismatch"


def test_the_admin_shows_the_raw_bytes(client: Client, student: Any, course: Course) -> None:
    from django.contrib.auth import get_user_model

    body = with_extra(student, course, r'"\ud83d <b>"')
    send(client, body)
    get_user_model().objects.create_superuser("ops", "ops@example.com", "Correct-Horse-9")
    client.force_login(get_user_model().objects.get(username="ops"))
    page = client.get(f"/admin/purchases/providerevent/{ProviderEvent.objects.get().pk}/change/")
    assert page.status_code == 200
    assert r"\ud83d &lt;b&gt;" in page.content.decode() and f"{len(body)} bytes" in page.content.decode()


def test_a_padded_payment_id_is_recorded_as_validated_so_retries_find_the_purchase(
    client: Client, student: Any, course: Course
) -> None:
    body = webhook_body(payment_id="  pay_1 ", student_id=student.pk, course_id=course.pk)
    first = send(client, body)
    assert first.status_code == 200 and ProviderEvent.objects.get().payment_id == "pay_1"
    assert send(client, body).json() == first.json()  # the retry finds the purchase through the record
