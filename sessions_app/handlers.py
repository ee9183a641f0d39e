"""Reactions of the sessions app to events. Thin: they call services."""

from outbox.models import OutboxEvent
from outbox.registry import handles
from outbox.services import Cause
from sessions_app import services


@handles("trainer.allocated", name="sessions.generate")
def on_trainer_allocated(event: OutboxEvent) -> None:
    services.sessions_generate(
        purchase_id=int(event.payload["purchase_id"]),
        cause=Cause.from_event(event, actor="handler:sessions.generate"),
    )


@handles("purchase.refunded", name="sessions.cancel")
def on_purchase_refunded(event: OutboxEvent) -> None:
    services.sessions_cancel(
        purchase_id=int(event.payload["purchase_id"]),
        cause=Cause.from_event(event, actor="handler:sessions.cancel"),
    )
