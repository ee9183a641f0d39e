"""The one way to record that something happened: `emit()` inside the writer's transaction."""

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import connection
from django.utils import timezone

from kernel.rows import mark_loaded
from outbox import registry
from outbox.models import OutboxEvent, new_event_id

REALTIME_SINK = "realtime"
NOTIFY_CHANNEL = "outbox_due"


class OutboxError(RuntimeError):
    """A programming error (an event emitted outside the transaction of the state it describes), not a
    refused request: deliberately not an ApplicationError, so every interface leaves it to its 5xx /
    traceback handling instead of showing it as a refusal."""


@dataclass(frozen=True)
class Cause:
    """Who or what made a change: the actor, the chain it belongs to, and the event that caused it."""

    actor: str
    correlation_id: str
    causation_id: UUID | None = None

    @classmethod
    def from_event(cls, event: OutboxEvent, *, actor: str) -> "Cause":
        return cls(actor=actor, correlation_id=event.correlation_id, causation_id=event.id)


# Sequence, event, deliveries and NOTIFY in one round trip: emit() runs in every writing transaction
# (webhook, handlers), and as three ORM statements it was a fifth of a handler's CPU time. The
# stream's UPSERT row-locks it until COMMIT. NOTIFY is transactional: sent at COMMIT, wherever it is
# called. `tx_id` takes its default, the writing transaction (see migration 0002).
_EMIT_SQL = """
WITH stream AS (
    INSERT INTO outbox_studentstream (student_id, last_seq) VALUES (%(student_id)s, 1)
    ON CONFLICT (student_id) DO UPDATE SET last_seq = outbox_studentstream.last_seq + 1
    RETURNING last_seq
), event AS (
    INSERT INTO outbox_outboxevent (id, type, aggregate_type, aggregate_id, student_id, seq, payload,
                                    correlation_id, causation_id, actor, created_at)
    SELECT %(id)s, %(type)s, %(aggregate_type)s, %(aggregate_id)s, %(student_id)s, last_seq,
           %(payload)s::jsonb, %(correlation_id)s, %(causation_id)s, %(actor)s, %(now)s
    FROM stream
    RETURNING id, seq
), delivery AS (
    INSERT INTO outbox_delivery (event_id, sink, student_id, seq, status, attempts, available_at,
                                 claimed_by, last_error, created_at)
    SELECT event.id, sink, %(student_id)s, event.seq, 'pending', 0, %(now)s, '', '', %(now)s
    FROM event, unnest(%(sinks)s::text[]) AS sink
)
SELECT seq, pg_notify(%(channel)s, '') IS NULL FROM event
"""


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
    event = OutboxEvent(
        id=new_event_id(),
        type=type,
        aggregate_type=aggregate_type,
        aggregate_id=str(aggregate_id),
        student_id=student_id,
        payload=payload,
        correlation_id=cause.correlation_id,
        causation_id=cause.causation_id,
        actor=cause.actor,
        created_at=timezone.now(),
    )
    sinks = [REALTIME_SINK, *(h.name for h in registry.handlers_for(type))]
    with connection.cursor() as cursor:
        cursor.execute(
            _EMIT_SQL,
            {
                "id": event.id,
                "type": event.type,
                "aggregate_type": event.aggregate_type,
                "aggregate_id": event.aggregate_id,
                "student_id": student_id,
                "payload": json.dumps(payload),
                "correlation_id": event.correlation_id,
                "causation_id": event.causation_id,
                "actor": event.actor,
                "now": event.created_at,
                "sinks": sinks,
                "channel": NOTIFY_CHANNEL,
            },
        )
        event.seq = cursor.fetchone()[0]
    return mark_loaded(event)
