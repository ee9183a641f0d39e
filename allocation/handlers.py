"""Reactions of the allocation app to events. Thin: they call services."""

from allocation import services
from outbox.models import OutboxEvent
from outbox.registry import handles
from outbox.services import Cause


@handles("purchase.created", name="allocation.allocate_trainer")
def on_purchase_created(event: OutboxEvent) -> None:
    services.trainer_allocate(
        purchase_id=int(event.payload["purchase_id"]),
        cause=Cause.from_event(event, actor="handler:allocation.allocate_trainer"),
    )


@handles("purchase.refunded", name="allocation.promote_waitlist")
def on_purchase_refunded(event: OutboxEvent) -> None:
    """The refund freed a trainer's place: give it to the oldest waitlisted purchase."""
    # One refund frees one place (and its slots): promote one purchase, so the handler's transaction
    # changes one purchase, one trainer and one student stream (no lock cycles with other writers).
    # Older purchases whose course fits none of the free slots are passed over, a bounded few.
    services.waitlist_promote(
        cause=Cause.from_event(event, actor="handler:allocation.promote_waitlist"), limit=1, scan=20
    )
