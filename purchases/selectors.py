"""Reads of purchases: the provider's records of a payment (the dashboard is in dashboard/selectors.py)."""

import json

from outbox.payment_records import PaymentRecord
from purchases.models import ProviderEvent


def raw_body_text(raw_body: bytes | memoryview | None) -> str:
    """The provider's exact bytes as text: they are UTF-8 (the webhook refuses anything else), and
    any other byte would show as an escape."""
    if raw_body is None:
        return "(not kept: recorded before the webhook kept raw bodies)"
    return bytes(raw_body).decode("utf-8", "backslashreplace")


def provider_event_records(payment_id: str) -> list[PaymentRecord]:
    """Every provider event recorded for this payment id, oldest first (for `trace`)."""
    events = ProviderEvent.objects.filter(payment_id=payment_id).order_by("id")[:100]
    return [
        PaymentRecord(
            summary=(
                f"{e.received_at:%Y-%m-%d %H:%M:%S} {e.type} event {e.provider_event_id}: {e.outcome}"
                + (f" {json.dumps(e.problem)}" if e.problem else "")
            ),
            body=raw_body_text(e.raw_body),
            fields={
                "provider_event_id": e.provider_event_id,
                "type": e.type,
                "outcome": e.outcome,
                "problem": e.problem,
                "received_at": e.received_at.isoformat(),
                "raw_body": raw_body_text(e.raw_body),
            },
        )
        for e in events
    ]
