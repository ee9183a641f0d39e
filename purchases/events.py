"""The one way to emit an event about a purchase (its chain: created, allocated, waitlisted, sessions,
refunded): the purchase is the aggregate, its student the stream, and `purchase_id` leads the payload."""

from typing import Any

from outbox import services as outbox
from outbox.models import OutboxEvent
from outbox.services import Cause
from purchases.models import Purchase


def purchase_event_emit(*, purchase: Purchase, type: str, payload: dict[str, Any], cause: Cause) -> OutboxEvent:
    """Emit `type` for `purchase` on its student's stream, `payload` after `purchase_id`. Needs the
    caller's transaction, with the state the event describes (as `outbox.emit`)."""
    return outbox.emit(
        type=type,
        student_id=purchase.student_id,
        aggregate_type="purchase",
        aggregate_id=purchase.pk,
        payload={"purchase_id": purchase.pk, **payload},
        cause=cause,
    )
