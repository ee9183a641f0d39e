"""HTTP interface of purchases: the payment webhook and the student's dashboard. Thin: services and
selectors do the work."""

import json
import logging
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApiError
from purchases import selectors, services, webhook
from purchases.errors import DomainError
from purchases.serializers import DashboardSerializer, PaymentWebhookSerializer, WebhookResultSerializer

logger = logging.getLogger(__name__)

MAX_WEBHOOK_BODY = 64 * 1024
SUPPORTED_TYPES = {"payment.succeeded"}


class PaymentWebhookApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    @extend_schema(
        operation_id="payment_webhook",
        request=PaymentWebhookSerializer,
        parameters=[
            OpenApiParameter(
                "Payment-Signature",
                location=OpenApiParameter.HEADER,
                required=True,
                description="t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>; several v1= during rotation",
            )
        ],
        responses={
            200: WebhookResultSerializer,
            400: OpenApiResponse(description="invalid_signature or malformed body"),
            422: OpenApiResponse(description="unknown student or course"),
        },
    )
    def post(self, request: Request) -> Response:
        body = request.body
        if len(body) > MAX_WEBHOOK_BODY:
            raise ApiError(code="body_too_large", message="Body exceeds 64 KiB.", status_code=413)
        try:
            webhook.verify(
                header=request.headers.get("Payment-Signature"),
                body=body,
                secrets=settings.PAYMENT_WEBHOOK_SECRETS,
                tolerance=settings.PAYMENT_WEBHOOK_TOLERANCE_SECONDS,
            )
        except webhook.InvalidSignature as exc:
            raise ApiError(code="invalid_signature", message=str(exc)) from exc
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(code="malformed_body", message="Body is not valid JSON.") from exc
        serializer = PaymentWebhookSerializer(data=payload)
        if not isinstance(payload, dict) or not serializer.is_valid():
            raise ApiError(
                code="malformed_body",
                message="Body does not match the webhook schema.",
                details={"fields": serializer.errors if isinstance(payload, dict) else "expected an object"},
            )
        event = serializer.validated_data
        if event["type"] not in SUPPORTED_TYPES:
            # Acknowledge, so the provider does not retry an event we will never handle.
            logger.info("ignoring webhook %s of type %s", event["id"], event["type"])
            return Response({"ignored": True, "type": event["type"]})
        data = event["data"]
        try:
            result = services.purchase_create(
                payment_id=data["payment_id"],
                student_id=data["student_id"],
                course_id=data["course_id"],
                amount=data["amount"],
                currency=data["currency"],
                actor="webhook",
            )
        except DomainError as exc:
            raise ApiError(code=exc.code, message=exc.message, status_code=422, details=exc.details) from exc
        return Response({"purchase_id": result.purchase.pk, "status": result.purchase.status})


class DashboardApi(APIView):
    @extend_schema(operation_id="me_dashboard", responses={200: DashboardSerializer})
    def get(self, request: Request) -> HttpResponse:
        body, from_cache = selectors.dashboard_json(student=request.user)
        response = HttpResponse(body, content_type="application/json")
        response["X-Cache"] = "hit" if from_cache else "miss"
        return response
