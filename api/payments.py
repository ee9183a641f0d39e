"""`POST /api/v1/payments/webhook`: the payment provider's signed events.

Thin: reading, signature check, parsing and validation only; the purchases service does the work.
"""

import logging
import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api import docs, payment_signature
from api.errors import ApiError
from flows import payments
from purchases import provider_body
from purchases.errors import EventConflict
from purchases.metrics import WEBHOOK_CONFLICTS
from purchases.models import ProviderEvent

# The webhook's log lines keep the logger name they have always had: operators' filters and alerts match it.
logger = logging.getLogger("purchases.api")

MAX_WEBHOOK_BODY = 64 * 1024
# ASCII digits only: str.isdigit() also accepts "²" and "٣", which int() then rejects or misreads.
_DIGITS = re.compile(r"[0-9]{1,18}")


def storable_text(value: str) -> None:
    """PostgreSQL text holds neither U+0000 (CharField refuses it already) nor a lone surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise serializers.ValidationError("Must not contain a lone surrogate (\\ud800-\\udfff).") from exc


class PaymentDataSerializer(serializers.Serializer[dict[str, object]]):
    payment_id = serializers.CharField(max_length=128, validators=[storable_text])
    student_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    course_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    amount = serializers.DecimalField(max_digits=10, decimal_places=2, min_value=0)
    currency = serializers.RegexField(r"^[A-Za-z]{3}$")


class ProviderEventEnvelopeSerializer(serializers.Serializer[dict[str, object]]):
    """What every provider event has; `data` is checked per type (unknown types are only recorded)."""

    id = serializers.CharField(max_length=128, validators=[storable_text])
    type = serializers.CharField(max_length=64, validators=[storable_text])
    created = serializers.IntegerField(min_value=0, max_value=2**63 - 1)
    # The provider's field is called `data`, which shadows Serializer.data; we never read .data here.
    data = serializers.DictField()  # type: ignore[assignment]


class PaymentWebhookApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    # Never rate-limited: a refused payment is a payment the provider must retry (signatures, not
    # counting, keep others out).
    throttle_classes: list[Any] = []

    # The body as the docs show it. The view itself validates in two steps (the envelope, then `data`
    # for a handled type), so that an event of another type is recorded rather than refused.
    class InputSerializer(ProviderEventEnvelopeSerializer):
        """The documented body of `payment.succeeded` and `payment.refunded`."""

        type = serializers.ChoiceField(choices=["payment.succeeded", "payment.refunded"])  # type: ignore[assignment]
        data = PaymentDataSerializer()  # type: ignore[assignment]

        class Meta:
            ref_name = "PaymentWebhook"

    class OutputSerializer(serializers.Serializer[dict[str, object]]):
        purchase_id = serializers.IntegerField(required=False)
        status = serializers.CharField(required=False)
        ignored = serializers.BooleanField(required=False, help_text="True for an event type we do not handle.")

        class Meta:
            ref_name = "WebhookResult"

    @extend_schema(**docs.webhook(request=InputSerializer, response=OutputSerializer))
    def post(self, request: Request) -> Response:
        body = _read_body(request)
        verify_signature(request, body)
        try:
            parsed = provider_body.parse(body)
        except provider_body.MalformedBody as exc:
            raise ApiError(code="malformed_body", message=str(exc)) from exc
        if not isinstance(parsed, dict):
            raise ApiError(code="malformed_body", message="Body must be a JSON object.")
        envelope = plain_envelope(parsed) or _validated(ProviderEventEnvelopeSerializer, parsed)
        data: dict[str, Any] = envelope["data"]
        if envelope["type"] in payments.HANDLED_PROVIDER_EVENTS:
            data = plain_payment_data(data) or _validated(PaymentDataSerializer, data, prefix="data")
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
    payment_signature.verify(
        header=request.headers.get("Payment-Signature"),
        body=body,
        secrets=settings.PAYMENT_WEBHOOK_SECRETS,
        tolerance=settings.PAYMENT_WEBHOOK_TOLERANCE_SECONDS,
    )


def _validated(serializer_class: type[Any], value: Any, *, prefix: str = "") -> dict[str, Any]:
    serializer = serializer_class(data=value)
    if not serializer.is_valid():
        errors = {f"{prefix}.{k}" if prefix else k: v for k, v in serializer.errors.items()}
        # storable(): an error may quote the input, which may hold what JSON output cannot encode.
        details = provider_body.storable(errors)
        raise ApiError(code="malformed_body", message="Body does not match the webhook schema.", details=details)
    return dict(serializer.validated_data)


# -- The plain body, validated without a serializer -------------------------------------------------
# DRF deep-copies a serializer's declared fields for every instance it builds: validating the two
# serializers above was a tenth of the webhook's CPU time. The body every provider sends is plain
# (exact JSON types, nothing to trim or convert, within the bounds), and these two functions accept
# exactly such values, returning what the serializer's validated_data would be. Anything else, None,
# goes to the serializer, so every error (and every unusual value that is still valid) is DRF's own.
# tests/test_webhook_validation.py checks that both agree on whatever these accept.
_BIGINT = 2**63 - 1
_UNSTORABLE_TEXT = re.compile(r"[\x00\ud800-\udfff]")  # CharField's NUL and surrogate checks, storable_text's
_AMOUNT = re.compile(r"[0-9]{1,8}(?:\.[0-9]{1,2})?")  # within max_digits=10, decimal_places=2, >= 0
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_CENTS = Decimal("0.01")


def _plain_text(value: Any, max_length: int) -> bool:
    """A CharField(max_length, validators=[storable_text]) would keep `value` as it is."""
    return (
        type(value) is str
        and 0 < len(value) <= max_length
        and value == value.strip()
        and _UNSTORABLE_TEXT.search(value) is None
    )


def _plain_int(value: Any, min_value: int) -> bool:
    """An IntegerField(min_value, max_value=2**63 - 1) would keep `value` as it is (bool is no int here)."""
    return type(value) is int and min_value <= value <= _BIGINT


def plain_envelope(value: dict[str, Any]) -> dict[str, Any] | None:
    """`ProviderEventEnvelopeSerializer`'s validated data for a plain envelope; None: ask the serializer."""
    event_id, type_, created, data = (value.get("id"), value.get("type"), value.get("created"), value.get("data"))
    if _plain_text(event_id, 128) and _plain_text(type_, 64) and _plain_int(created, 0) and type(data) is dict:
        return {"id": event_id, "type": type_, "created": created, "data": dict(data)}
    return None


def plain_payment_data(value: dict[str, Any]) -> dict[str, Any] | None:
    """`PaymentDataSerializer`'s validated data for plain payment data; None: ask the serializer."""
    payment_id, student_id, course_id = value.get("payment_id"), value.get("student_id"), value.get("course_id")
    amount, currency = value.get("amount"), value.get("currency")
    if (
        _plain_text(payment_id, 128)
        and _plain_int(student_id, 1)
        and _plain_int(course_id, 1)
        and type(amount) is str
        and _AMOUNT.fullmatch(amount)
        and type(currency) is str
        and _CURRENCY.fullmatch(currency)
    ):
        return {
            "payment_id": payment_id,
            "student_id": student_id,
            "course_id": course_id,
            "amount": Decimal(amount).quantize(_CENTS),
            "currency": currency,
        }
    return None
