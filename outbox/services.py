"""The one way to record that something happened: `emit()` inside the writer's transaction."""

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import connection
from django.utils import timezone

from outbox import registry
from outbox.models import Delivery, OutboxEvent

REALTIME_SINK = "realtime"
NOTIFY_CHANNEL = "outbox_due"


class OutboxError(RuntimeError):
    pass


@dataclass(frozen=True)
class Cause:
    """Who or what made a change: the actor, the chain it belongs to, and the event that caused it."""

    actor: str
    correlation_id: str
    causation_id: UUID | None = None

    @classmethod
    def from_event(cls, event: OutboxEvent, *, actor: str) -> "Cause":
        return cls(actor=actor, correlation_id=event.correlation_id, causation_id=event.id)


def emit(
    *,
    type: str,
    student_id: int,
    aggregate_type: str,
    aggregate_id: int | str,
    payload: dict[str, Any],
    cause: Cause,
) -> OutboxEvent:
    """Record an event and its pending deliveries in the caller's transaction.

    Needs an open `transaction.atomic()` (raises `OutboxError` otherwise) so the event commits or
    rolls back with the state it describes. Assigns the student's next seq: the UPSERT row-locks the
    student's stream until COMMIT, so seqs are gapless and commit in seq order. Issues NOTIFY, which
    PostgreSQL delivers to the relay only at COMMIT.
    """
    if not connection.in_atomic_block:
        raise OutboxError("emit() must be called inside transaction.atomic(), with the state it describes")
    with connection.cursor() as cursor:
        # NOTIFY in the same round trip: it is transactional, so where in the transaction makes no odds.
        cursor.execute(
            "INSERT INTO outbox_studentstream (student_id, last_seq) VALUES (%s, 1) "
            "ON CONFLICT (student_id) DO UPDATE SET last_seq = outbox_studentstream.last_seq + 1 "
            "RETURNING last_seq, pg_notify(%s, '') IS NULL",
            [student_id, NOTIFY_CHANNEL],
        )
        seq = cursor.fetchone()[0]
        event = OutboxEvent.objects.create(
            type=type,
            aggregate_type=aggregate_type,
            aggregate_id=str(aggregate_id),
            student_id=student_id,
            seq=seq,
            payload=payload,
            correlation_id=cause.correlation_id,
            causation_id=cause.causation_id,
            actor=cause.actor,
        )
        now = timezone.now()
        sinks = [REALTIME_SINK, *(h.name for h in registry.handlers_for(type))]
        Delivery.objects.bulk_create(
            [Delivery(event=event, sink=sink, student_id=student_id, seq=seq, available_at=now) for sink in sinks]
        )
    return event
