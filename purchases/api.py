"""HTTP interface of purchases: the payment webhook and the student's read API.

Thin: parsing, validation and error mapping only; services and selectors do the work.
"""

import json
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
from outbox.selectors import student_events_after
from purchases import api_docs, selectors, services, webhook
from purchases.errors import DomainError
from purchases.models import Course
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

    @extend_schema(**api_docs.WEBHOOK)
    def post(self, request: Request) -> Response:
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not _DIGITS.fullmatch(declared) or int(declared) > MAX_WEBHOOK_BODY:
            raise ApiError(code="body_too_large", message="Body exceeds 64 KiB.", status_code=413)
        body = request.body
        if len(body) > MAX_WEBHOOK_BODY:  # a chunked body declares no length
            raise ApiError(code="body_too_large", message="Body exceeds 64 KiB.", status_code=413)
        verify_signature(request, body)
        raw = _json_object(body)
        envelope = _validated(ProviderEventEnvelopeSerializer, raw)
        data: dict[str, Any] = envelope["data"]
        if envelope["type"] in services.HANDLED_PROVIDER_EVENTS:
            data = _validated(PaymentDataSerializer, data, prefix="data")
        try:
            result = services.provider_event_receive(event_id=envelope["id"], type=envelope["type"], data=data, raw=raw)
        except DomainError as exc:
            raise ApiError(code=exc.code, message=exc.message, status_code=422, details=exc.details) from exc
        if result.purchase is None:
            return Response({"ignored": True})
        return Response({"purchase_id": result.purchase.pk, "status": result.purchase.status})


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


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(code="malformed_body", message="Body is not valid JSON.") from exc
    if not isinstance(parsed, dict):
        raise ApiError(code="malformed_body", message="Body must be a JSON object.")
    if _has_nul(parsed):  # PostgreSQL text and jsonb cannot store U+0000
        raise ApiError(code="malformed_body", message="Strings in the body must not contain U+0000.")
    return parsed


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _validated(serializer_class: type[Any], value: Any, *, prefix: str = "") -> dict[str, Any]:
    serializer = serializer_class(data=value)
    if not serializer.is_valid():
        errors = {f"{prefix}.{k}" if prefix else k: v for k, v in serializer.errors.items()}
        raise ApiError(code="malformed_body", message="Body does not match the webhook schema.", details=errors)
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
        return Response({"events": [e.as_message() for e in events], "seq": events[-1].seq if events else after})


class CoursesApi(APIView):
    @extend_schema(**api_docs.COURSES)
    def get(self, request: Request) -> Response:
        return Response(CourseSerializer(Course.objects.order_by("id"), many=True).data)
