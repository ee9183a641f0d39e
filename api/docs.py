"""What `/api/docs/` says about each endpoint: descriptions, realistic examples, the error shape per status.

Kept apart from the resource modules (api/*.py) so the views stay thin; each endpoint's entry is a
function of the view's own Input/Output serializers. Descriptions are Markdown that Swagger UI and
ReDoc render as HTML, so placeholders are written `{t}`, never `<t>` (a browser reads that as a tag
and shows nothing).
"""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from api.errors import ErrorSerializer

# A resource module's serializer class (its nested InputSerializer or OutputSerializer).
SerializerClass = type[serializers.Serializer[Any]]

WEBSOCKET_DOCS = "/api/docs/websocket/"

SIGNATURE_SCHEME = """\
Signed by the payment provider with a secret shared with this service.

**Header** `Payment-Signature: t={t},v1={hex}`

* `{t}`: the time of signing, in Unix seconds. A `t` more than **300 s** before or after now is rejected.
* `{hex}`: lowercase hex of **HMAC-SHA256**(secret, `{t}.{raw body}`): the decimal `t`, a full stop, then the
  request body's exact bytes as sent.
* Several `v1=` values may be sent (secret rotation): the request is accepted if any one matches any
  configured secret (`PAYMENT_WEBHOOK_SECRET`, comma-separated).

Example (Python): `hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()`

**Header grammar**: `t` is 1-12 ASCII digits and appears once; each `v1` is 64 hex digits; the header
is at most 600 characters. Anything else is `invalid_signature`.

**Body**: RFC 8259 JSON (no `NaN`/`Infinity`, nothing after the value), nested at most **32** deep, at
most 64 KiB. Its exact bytes are kept whatever its other fields hold (lone surrogates, `\u0000`, numbers
beyond a float); only `id`, `type` and `data` are validated.

Every duplicate of a payment (same payment id, same data) answers 200 with the same purchase and emits
nothing new. The same payment id with another student, course, amount or currency is `409
payment_conflict`; the same event id with another body is `409 event_conflict`; a refund whose student
or course does not match the payment's purchase is `422 refund_mismatch`: each is recorded, nothing
changes, and a retry gets the same answer. An event type other than `payment.succeeded` /
`payment.refunded` is recorded and answered `{"ignored": true}`. Never rate-limited; never a 5xx for any
input.
"""

_PAYMENT = {"payment_id": "pay_3QnX81", "student_id": 1, "course_id": 2, "amount": "240.00", "currency": "EUR"}
_SUCCEEDED = {"id": "evt_1PqR7sT2", "type": "payment.succeeded", "created": 1764633600, "data": _PAYMENT}
_REFUNDED = {"id": "evt_1PqR9zK4", "type": "payment.refunded", "created": 1764637200, "data": _PAYMENT}


def error_example(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> OpenApiExample:
    return OpenApiExample(
        code,
        value={"error": {"code": code, "message": message, "details": details or {}}},
        response_only=True,
        status_codes=[str(status)],
    )


def error_responses(*specs: tuple[int, str, list[OpenApiExample]]) -> dict[int, OpenApiResponse]:
    """An endpoint's error responses in the one error shape: (status, description, examples) each."""
    return {
        status: OpenApiResponse(ErrorSerializer, description=text, examples=examples)
        for status, text, examples in specs
    }


THROTTLED = (
    429,
    "Over the rate limit (`API_THROTTLE_STUDENT_RATE` per token, `API_THROTTLE_ANON_RATE` per address): retry "
    "after the `Retry-After` header's seconds.",
    [error_example(429, "throttled", "Too many requests; retry later.", {"retry_after_seconds": 57})],
)

UNAUTHENTICATED = (
    401,
    'No or an invalid token: send `Authorization: Token {key}`. Body: `{"error": {"code", "message", "details"}}`.',
    [error_example(401, "not_authenticated", "Authentication credentials were not provided.")],
)


def webhook(*, request: SerializerClass, response: SerializerClass) -> dict[str, Any]:
    return {
        "operation_id": "payment_webhook",
        "summary": "Payment provider webhook",
        "description": SIGNATURE_SCHEME,
        "request": request,
        "parameters": [
            OpenApiParameter(
                "Payment-Signature",
                OpenApiTypes.STR,
                location=OpenApiParameter.HEADER,
                required=True,
                description="`t={t},v1={hex}[,v1={hex}...]`: see the scheme above.",
                examples=[
                    OpenApiExample(
                        "signature",
                        value="t=1764633600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
                    )
                ],
            )
        ],
        "examples": [
            OpenApiExample("payment.succeeded", value=_SUCCEEDED, request_only=True),
            OpenApiExample("payment.refunded", value=_REFUNDED, request_only=True),
            OpenApiExample(
                "purchase created (and every duplicate)",
                value={"purchase_id": 17, "status": "pending"},
                response_only=True,
                status_codes=["200"],
            ),
            OpenApiExample("unhandled event type", value={"ignored": True}, response_only=True, status_codes=["200"]),
        ],
        "responses": {
            200: response,
            **error_responses(
                (
                    400,
                    "Bad or missing signature (`invalid_signature`), or a body that is not a JSON object of this "
                    "schema "
                    "(`malformed_body`, with the failing fields in `details`).",
                    [
                        error_example(400, "invalid_signature", "no signature matches"),
                        error_example(
                            400,
                            "malformed_body",
                            "Body does not match the webhook schema.",
                            {"data.amount": ["A valid number is required."]},
                        ),
                    ],
                ),
                (413, "Body over 64 KiB.", [error_example(413, "body_too_large", "Body exceeds 64 KiB.")]),
                (
                    409,
                    "The payment id is known with other terms (`payment_conflict`), or the event id with another body "
                    "(`event_conflict`). Nothing changed.",
                    [
                        error_example(
                            409,
                            "payment_conflict",
                            "This payment id is recorded with another student, course, amount or currency; nothing "
                            "changed.",
                            {"purchase_id": 17, "fields": {"amount": {"recorded": "240.00", "sent": "24.00"}}},
                        ),
                        error_example(409, "event_conflict", "event evt_1PqR7sT2 was received with another body"),
                    ],
                ),
                (
                    422,
                    "Valid, but not applicable: `unknown_student`, `not_a_student` (staff and superusers cannot buy), "
                    "`unknown_course`, `unknown_payment` (a refund for no purchase), `refund_mismatch` (a refund whose "
                    "student or course is not the purchase's).",
                    [
                        error_example(422, "unknown_student", "no active student with id 1", {"student_id": 1}),
                        error_example(
                            422,
                            "not_a_student",
                            "user 1 is staff or a superuser, not a student: only students can hold purchases",
                            {"student_id": 1},
                        ),
                        error_example(422, "unknown_course", "no course with id 2", {"course_id": 2}),
                        error_example(
                            422,
                            "refund_mismatch",
                            "The refund's student or course does not match the payment's purchase; "
                            "nothing was refunded.",
                            {"purchase_id": 17, "fields": {"student": {"recorded": 1, "sent": 2}}},
                        ),
                    ],
                ),
            ),
        },
    }


_DASHBOARD = {
    "student": {"id": 1, "username": "alice", "email": "alice@example.com"},
    "purchases": [
        {
            "id": 17,
            "status": "active",
            "course": {"id": 2, "title": "Strength basics"},
            "trainer": {"id": 1, "name": "Ada Trainer"},
            "sessions": [
                {"id": 81, "starts_at": "2026-12-07T09:00:00Z", "status": "scheduled"},
                {"id": 82, "starts_at": "2026-12-14T09:00:00Z", "status": "scheduled"},
            ],
        },
        {"id": 18, "status": "waitlisted", "course": {"id": 3, "title": "Mobility"}, "trainer": None, "sessions": []},
    ],
    "seq": 5,
}


def dashboard(*, response: SerializerClass) -> dict[str, Any]:
    return {
        "operation_id": "me_dashboard",
        "summary": "The student's purchases, trainers and sessions",
        "description": (
            "Served from a cache that only the relay invalidates (`X-Cache: hit|miss`); `seq` is the last of the "
            "student's events this view reflects. Purchase status: `pending`, `waitlisted`, `active`, `refunded`; "
            "session status: `scheduled`, `cancelled`, `completed`. Live updates: the "
            f"[WebSocket event stream]({WEBSOCKET_DOCS}) with `after={{seq}}`."
        ),
        "responses": {
            200: OpenApiResponse(response, examples=[OpenApiExample("dashboard", value=_DASHBOARD)]),
            **error_responses(UNAUTHENTICATED, THROTTLED),
        },
    }


_EVENT = {
    "id": "019ad6f2-7c41-7d2e-9a51-3f0c6e2b8d17",
    "seq": 4,
    "type": "trainer.allocated",
    "occurred_at": "2026-12-01T10:15:02.318Z",
    "data": {"purchase_id": 17, "trainer": {"id": 1, "name": "Ada Trainer"}, "status": "active"},
}


def events(*, response: SerializerClass) -> dict[str, Any]:
    return {
        "operation_id": "me_events",
        "summary": "The student's events after a cursor",
        "description": (
            "Events in seq order (gapless per student), at most 500 per page; pass the returned `seq` as `after` for "
            "the next page. The same messages as the [WebSocket event stream]"
            f"({WEBSOCKET_DOCS})."
        ),
        "parameters": [
            OpenApiParameter(
                "after",
                OpenApiTypes.INT,
                description="Return events with seq > after (default 0).",
                examples=[OpenApiExample("from the start", value=0), OpenApiExample("resume", value=3)],
            )
        ],
        "responses": {
            200: OpenApiResponse(response, examples=[OpenApiExample("page", value={"events": [_EVENT], "seq": 4})]),
            **error_responses(
                (
                    400,
                    "`after` is not a non-negative integer (`invalid_request`), or is ahead of the student's stream "
                    "(`cursor_ahead`: the client must refetch from 0 or from `details.seq`).",
                    [
                        error_example(
                            400, "invalid_request", "`after` must be a non-negative integer.", {"after": "-1"}
                        ),
                        error_example(
                            400,
                            "cursor_ahead",
                            "`after` is ahead of the stream; resume from `seq`.",
                            {"after": 13, "seq": 8},
                        ),
                    ],
                ),
                UNAUTHENTICATED,
                THROTTLED,
            ),
        },
    }


def courses(*, response: SerializerClass) -> dict[str, Any]:
    return {
        "operation_id": "courses_list",
        "summary": "Courses on sale",
        "responses": {
            200: OpenApiResponse(
                response(many=True),
                examples=[
                    OpenApiExample(
                        "courses",
                        value=[
                            {
                                "id": 2,
                                "title": "Strength basics",
                                "sessions_count": 6,
                                "session_minutes": 60,
                                "price": "240.00",
                                "currency": "EUR",
                            }
                        ],
                    )
                ],
            ),
            **error_responses(UNAUTHENTICATED, THROTTLED),
        },
    }


def profile_get(*, response: SerializerClass) -> dict[str, Any]:
    return {
        "operation_id": "me_profile",
        "summary": "The student's profile",
        "examples": [OpenApiExample("profile", value={"timezone": "Europe/Berlin"}, response_only=True)],
        "responses": {200: response, **error_responses(UNAUTHENTICATED, THROTTLED)},
    }


def profile_update(*, request: SerializerClass, response: SerializerClass) -> dict[str, Any]:
    return {
        "operation_id": "me_profile_update",
        "summary": "Set the student's time zone",
        "description": (
            "The zone the student's app shows session times in (an IANA name, or null for the device's own). "
            "The dashboard carries it as `student.timezone`; a change reaches the student's open apps as "
            "`student.resync_requested`."
        ),
        "request": request,
        "examples": [
            OpenApiExample("set", value={"timezone": "America/New_York"}),
            OpenApiExample("clear (use the device's zone)", value={"timezone": None}, request_only=True),
        ],
        "responses": {
            200: response,
            **error_responses(
                (
                    400,
                    "Not an IANA time zone name (`invalid_timezone`).",
                    [
                        error_example(
                            400,
                            "invalid_timezone",
                            "'Mars/Olympus' is not an IANA time zone name",
                            {"timezone": "Mars/Olympus"},
                        )
                    ],
                ),
                UNAUTHENTICATED,
                THROTTLED,
            ),
        },
    }
