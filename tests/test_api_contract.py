"""The OpenAPI contract, fuzzed: generated and malformed input on every endpoint, zero 5xx, and every
response matches the schema. Plus a signed-webhook fuzzer that gets past the signature check."""

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import CHECKS
from schemathesis.generation import GenerationMode

from api.payment_signature import sign
from purchases.models import Course, ProviderEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_schema(db: None) -> Iterator[Any]:
    # Like Django's test Client: keep the test's connection (and its transaction) across requests.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


CHECK_NAMES = {
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
}
OPERATIONS = [
    "POST /api/v1/payments/webhook",
    "GET /api/v1/me/dashboard",
    "GET /api/v1/me/events",
    "GET /api/v1/courses",
    "GET /api/v1/me/profile",
    "PATCH /api/v1/me/profile",
    "POST /api/v1/me/sessions/{session_id}/reschedule",
]


def test_the_schema_lists_every_endpoint(api_schema: Any) -> None:
    labels = sorted(result.ok().label for result in api_schema.get_all_operations())
    assert labels == sorted(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("label", OPERATIONS)
def test_every_endpoint_conforms_and_never_5xx(
    api_schema: Any, label: str, mode: GenerationMode, student: Any, course: Course
) -> None:
    """Generated (positive) and malformed (negative) requests, with and without a valid token."""
    checks = [c for c in CHECKS.get_all() if c.__name__ in CHECK_NAMES]
    assert len(checks) == len(CHECK_NAMES)
    operation = api_schema.find_operation_by_label(label)
    tokens = st.sampled_from([f"Token {student.auth_token.key}", "Token wrong", ""])

    @given(
        case=operation.as_strategy(generation_mode=mode),
        authorization=tokens,
        extra=json_text,
        real_ids=st.booleans(),
    )
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any, authorization: str, extra: str, real_ids: bool) -> None:
        headers = {"Authorization": authorization} if authorization else {}
        kwargs: dict[str, Any] = {}
        if label == WEBHOOK and (body := signed_body(case.body, extra, student, course, real_ids)) is not None:
            # Past the signature: the generated body, with arbitrary JSON in a field nobody validates.
            headers["Payment-Signature"] = sign(
                body=body, secret=django_settings.PAYMENT_WEBHOOK_SECRETS[0], timestamp=int(time.time())
            )
            headers["Content-Type"] = "application/json"
            kwargs["data"] = body
        case.call_and_validate(headers=headers, checks=checks, **kwargs)

    run()


WEBHOOK = "POST /api/v1/payments/webhook"


def signed_body(generated: Any, extra: str, student: Any, course: Course, real_ids: bool) -> bytes | None:
    """The generated body as JSON text, with `extra` (JSON text) added as an unvalidated field, and the
    student and course made real when `real_ids` (so that the payment is accepted). None if the
    generated body is not JSON."""
    if isinstance(generated, dict) and real_ids and isinstance(generated.get("data"), dict):
        generated = {**generated, "data": {**generated["data"], "student_id": student.pk, "course_id": course.pk}}
    try:
        text = json.dumps(generated)
    except (TypeError, ValueError):
        return None
    if isinstance(generated, dict):
        text = text[:-1] + (", " if generated else "") + f'"x_note": {extra}' + "}"
    return text.encode()


# JSON text (RFC 8259), including what Python's json module cannot produce from values and what
# PostgreSQL's jsonb cannot store: lone surrogate escapes, \u0000, numbers beyond a float.
json_text = st.recursive(
    st.sampled_from(
        ["null", "true", "false", "-0", "1e400", "-1e400", "1e-400", "9" * 5000, '"\\ud83d"', '"\\udfff\\u0000x"']
    )
    | st.integers().map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.text(max_size=20).map(json.dumps),
    lambda children: (
        st.lists(children, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(st.tuples(st.text(max_size=8).map(json.dumps) | st.just('"\\ud800"'), children), max_size=3).map(
            lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
        )
    ),
    max_leaves=10,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)
payment_data = st.fixed_dictionaries(
    {},
    optional={
        "payment_id": st.text(max_size=200) | json_values,
        "student_id": st.integers() | json_values,
        "course_id": st.integers() | json_values,
        "amount": st.decimals(allow_nan=False, allow_infinity=False).map(str) | json_values,
        "currency": st.text(max_size=5) | json_values,
    },
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=200) | json_values,
        "type": st.sampled_from(["payment.succeeded", "payment.refunded", "payment.other"]) | json_values,
        "created": st.integers() | json_values,
        "data": payment_data | json_values,
    },
)


@given(envelope=envelopes)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_signed_garbage_never_gets_a_5xx(envelope: dict[str, Any], client: Client) -> None:
    body = json.dumps(envelope).encode()
    now = int(time.time())
    response = client.post(
        "/api/v1/payments/webhook",
        data=body,
        content_type="application/json",
        headers={
            "Payment-Signature": sign(body=body, secret=django_settings.PAYMENT_WEBHOOK_SECRETS[0], timestamp=now)
        },
    )
    assert response.status_code < 500, response.content
    assert response.status_code in (200, 400, 409, 422)
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"code", "message", "details"}
    if response.status_code == 409:  # hypothesis repeats ids across examples, and the database keeps them
        assert response.json()["error"]["code"] in ("event_conflict", "payment_conflict")


@given(
    payment_text=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=60),
    top=json_text,
    inside=json_text,
    spacing=st.sampled_from(["", " ", "\n\t "]),
)
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_signed_payment_with_any_json_in_unvalidated_fields_is_accepted_and_kept_exactly(
    payment_text: str, top: str, inside: str, spacing: str, client: Client, student: Any, course: Course
) -> None:
    event_id = str(uuid.uuid4())  # fresh for every example: the database is not reset between them
    payment_id = json.dumps(f"{payment_text.strip()}-{event_id}"[-128:])
    body = (
        f'{{"id":"{event_id}",{spacing}"type":"payment.succeeded","created":{int(time.time())},"note":{top},'
        f'"data":{{"payment_id":{payment_id},"student_id":{student.pk},"course_id":{course.pk},'
        f'"amount":"240.00","currency":"EUR","memo":{inside}}}}}{spacing}'
    ).encode()
    response = client.post(
        "/api/v1/payments/webhook",
        data=body,
        content_type="application/json",
        headers={
            "Payment-Signature": sign(
                body=body, secret=django_settings.PAYMENT_WEBHOOK_SECRETS[0], timestamp=int(time.time())
            )
        },
    )
    assert response.status_code == 200, (body[:300], response.content)
    recorded = ProviderEvent.objects.get(provider_event_id=event_id)
    assert bytes(recorded.raw_body or b"") == body
    assert recorded.outcome == "applied"
