"""The OpenAPI contract, fuzzed: generated and malformed input on every endpoint, zero 5xx, and every
response matches the schema. Plus a signed-webhook fuzzer that gets past the signature check."""

import json
import time
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

from purchases.models import Course
from purchases.webhook import sign

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

    @given(case=operation.as_strategy(generation_mode=mode), authorization=tokens)
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any, authorization: str) -> None:
        headers = {"Authorization": authorization} if authorization else {}
        case.call_and_validate(headers=headers, checks=checks)

    run()


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
    assert response.status_code in (200, 400, 422)
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"code", "message", "details"}
