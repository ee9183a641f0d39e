"""HTTP interface of purchases: the payment webhook and the student's read API.

Thin: parsing, validation and error mapping only; services and selectors do the work.
"""

import logging
import re
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApiError
from flows import payments
from outbox.selectors import student_events_after, student_last_seq
from purchases import api_docs, provider_body, selectors, webhook
from purchases.errors import EventConflict
from purchases.metrics import WEBHOOK_CONFLICTS
from purchases.models import Course, ProviderEvent
from purchases.serializers import (
    CourseSerializer,
    PaymentDataSerializer,
    ProviderEventEnvelopeSerializer,
)

logger = logging.getLogger(__name__)

MAX_WEBHOOK_BODY = 64 * 1024
# ASCII digits only: str.isdigit() also accepts "²" and "٣", which int() then rejects or misreads.
_DIGITS = re.compile(r"[0-9]{1,18}")
EVENTS_PAGE_LIMIT = 500


class PaymentWebhookApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    # Never rate-limited: a refused payment is a payment the provider must retry (signatures, not
    # counting, keep others out).
    throttle_classes: list[Any] = []

    @extend_schema(**api_docs.WEBHOOK)
    def post(self, request: Request) -> Response:
        body = _read_body(request)
        verify_signature(request, body)
        try:
            parsed = provider_body.parse(body)
        except provider_body.MalformedBody as exc:
            raise ApiError(code="malformed_body", message=str(exc)) from exc
        if not isinstance(parsed, dict):
            raise ApiError(code="malformed_body", message="Body must be a JSON object.")
        envelope = _validated(ProviderEventEnvelopeSerializer, parsed)
        data: dict[str, Any] = envelope["data"]
        if envelope["type"] in payments.HANDLED_PROVIDER_EVENTS:
            data = _validated(PaymentDataSerializer, data, prefix="data")
        try:
            result = payments.provider_event_receive(
                event_id=envelope["id"],
                type=envelope["type"],
                data=data,
                payload=provider_body.storable(parsed),
                raw_body=body,
            )
        except EventConflict as exc:
            WEBHOOK_CONFLICTS.labels(exc.code).inc()
            logger.warning("webhook: %s", exc.message)
            raise
        if result.outcome in _REFUSED:
            code, status, message = _REFUSED[result.outcome]
            WEBHOOK_CONFLICTS.labels(code).inc()
            logger.warning("webhook: %s for payment %s: %s", code, data["payment_id"], result.problem)
            details = {"purchase_id": result.purchase.pk if result.purchase else None, "fields": result.problem}
            raise ApiError(code=code, message=message, status_code=status, details=details)
        if result.purchase is None:
            return Response({"ignored": True})
        return Response({"purchase_id": result.purchase.pk, "status": result.purchase.status})


_REFUSED: dict[str, tuple[str, int, str]] = {
    ProviderEvent.Outcome.CONFLICT: (
        "payment_conflict",
        409,
        "This payment id is recorded with another student, course, amount or currency; nothing changed.",
    ),
    ProviderEvent.Outcome.MISMATCH: (
        "refund_mismatch",
        422,
        "The refund's student or course does not match the payment's purchase; nothing was refunded.",
    ),
}


def _read_body(request: Request) -> bytes:
    """The whole body, at most MAX_WEBHOOK_BODY bytes, or 413."""
    too_large = ApiError(code="body_too_large", message="Body exceeds 64 KiB.", status_code=413)
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared and (not _DIGITS.fullmatch(declared) or int(declared) > MAX_WEBHOOK_BODY):
        raise too_large
    stream = request.META.get("wsgi.input")
    try:
        if not declared and stream is not None and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            # Django's WSGI request reads no body without a Content-Length; the server (gunicorn) hands
            # over the de-chunked stream, which ends with the body. (Under ASGI request.body has it all.)
            body: bytes = stream.read(MAX_WEBHOOK_BODY + 1)
        else:
            body = request.body
    except Exception as exc:  # the server's own error for a broken chunk or a cut connection, whatever its class
        raise ApiError(code="malformed_body", message="The body could not be read (broken chunked encoding?).") from exc
    if len(body) > MAX_WEBHOOK_BODY:
        raise too_large
    return body


def verify_signature(request: Request, body: bytes) -> None:
    """Raise 400 `invalid_signature` unless a configured secret signed `body` within the tolerance."""
    try:
        webhook.verify(
            header=request.headers.get("Payment-Signature"),
            body=body,
            secrets=settings.PAYMENT_WEBHOOK_SECRETS,
            tolerance=settings.PAYMENT_WEBHOOK_TOLERANCE_SECONDS,
        )
    except webhook.InvalidSignature as exc:
        raise ApiError(code="invalid_signature", message=str(exc)) from exc


def _validated(serializer_class: type[Any], value: Any, *, prefix: str = "") -> dict[str, Any]:
    serializer = serializer_class(data=value)
    if not serializer.is_valid():
        errors = {f"{prefix}.{k}" if prefix else k: v for k, v in serializer.errors.items()}
        # storable(): an error may quote the input, which may hold what JSON output cannot encode.
        details = provider_body.storable(errors)
        raise ApiError(code="malformed_body", message="Body does not match the webhook schema.", details=details)
    return dict(serializer.validated_data)


class DashboardApi(APIView):
    @extend_schema(**api_docs.DASHBOARD)
    def get(self, request: Request) -> HttpResponse:
        body, from_cache = selectors.dashboard_json(student=request.user)
        response = HttpResponse(body, content_type="application/json")
        response["X-Cache"] = "hit" if from_cache else "miss"
        return response


class EventsApi(APIView):
    @extend_schema(**api_docs.EVENTS)
    def get(self, request: Request) -> Response:
        raw_after = request.query_params.get("after", "0")
        if not _DIGITS.fullmatch(raw_after):
            raise ApiError(
                code="invalid_request", message="`after` must be a non-negative integer.", details={"after": raw_after}
            )
        after = int(raw_after)
        assert request.user is not None and request.user.pk is not None
        events = student_events_after(student_id=request.user.pk, after=after, limit=EVENTS_PAGE_LIMIT)
        if not events and after > (last := student_last_seq(student_id=request.user.pk)):
            # As the socket's 4400: a client following this cursor would skip the events up to it.
            raise ApiError(
                code="cursor_ahead",
                message="`after` is ahead of the stream; resume from `seq`.",
                details={"after": after, "seq": last},
            )
        return Response({"events": [e.as_message() for e in events], "seq": events[-1].seq if events else after})


class CoursesApi(APIView):
    @extend_schema(**api_docs.COURSES)
    def get(self, request: Request) -> Response:
        return Response(CourseSerializer(Course.objects.order_by("id"), many=True).data)
