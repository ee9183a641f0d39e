"""The naive baseline the webhook benchmark compares against (benchmark processes only).

The same request work as the real webhook (signature, parsing, validation, idempotency by provider
event and by payment, Payment + Purchase + ProviderEvent rows, nested transactions) but, instead of
an outbox event, `transaction.on_commit(task.delay)`: the pattern the outbox replaces. Its database
runs without the event guard triggers (the naive system has none), so this is the honest cost of the
path without an outbox: what the outbox adds is the per-student seq UPSERT, the event and delivery
INSERTs, NOTIFY and the guard's check at COMMIT; what it saves is the broker round trip.

The task it enqueues, `naive_purchase_created`, starts the naive chain (`benchmarks.naive_chain`) when a
worker runs (the latency benchmark); the webhook benchmark runs none and measures only the enqueueing.
"""

import functools
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.errors import ApiError
from api.payments import PaymentDataSerializer, ProviderEventEnvelopeSerializer, _validated, verify_signature
from benchmarks.naive_chain import naive_purchase_created
from purchases import provider_body
from purchases.models import Course, Payment, ProviderEvent, Purchase


class NaiveWebhookApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []  # as the real webhook: never rate-limited

    def post(self, request: Request) -> Response:
        body = request.body
        verify_signature(request, body)
        raw = provider_body.parse(body)
        envelope = _validated(ProviderEventEnvelopeSerializer, raw)
        data = _validated(PaymentDataSerializer, envelope["data"], prefix="data")
        with transaction.atomic():
            seen = ProviderEvent.objects.filter(provider_event_id=envelope["id"]).first()
            if seen is not None:
                purchase = Purchase.objects.filter(payment__provider_payment_id=seen.payment_id).first()
                assert purchase is not None
                return Response({"purchase_id": purchase.pk, "status": purchase.status})
            purchase = _purchase_create(data)
            ProviderEvent.objects.get_or_create(
                provider_event_id=envelope["id"],
                defaults={
                    "type": envelope["type"],
                    "payment_id": data["payment_id"],
                    "outcome": ProviderEvent.Outcome.APPLIED,
                    "payload": provider_body.storable(raw),
                    "raw_body": body,
                },
            )
        return Response({"purchase_id": purchase.pk, "status": purchase.status})


def _purchase_create(data: dict[str, Any]) -> Purchase:
    with transaction.atomic():
        existing = Purchase.objects.filter(payment__provider_payment_id=data["payment_id"]).first()
        if existing is not None:
            return existing
        student = get_user_model().objects.filter(id=data["student_id"], is_active=True).first()
        course = Course.objects.filter(id=data["course_id"]).first()
        if student is None or course is None:
            raise ApiError(code="unknown_student_or_course", message="unknown", status_code=422)
        payment, created = Payment.objects.get_or_create(
            provider_payment_id=data["payment_id"],
            defaults={"amount": data["amount"], "currency": data["currency"].upper()},
        )
        if not created:
            return Purchase.objects.get(payment=payment)
        purchase = Purchase.objects.create(payment=payment, student=student, course=course)
        transaction.on_commit(functools.partial(naive_purchase_created.delay, purchase.pk, student.pk))
        return purchase
