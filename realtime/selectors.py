"""Reads of a student's event stream for the WebSocket consumer (replay, gap repair, seam check).

"Delivered" means the event's realtime delivery is done: the relay has invalidated the student's read
models for it (and pushed it). The consumer sends an event from the database only once it is
delivered, so a client that refetches on any message — replayed or live — never reads a view older
than that message (invariant 5 in docs/architecture.md). The relay delivers one student's realtime stream strictly in
seq order, so the delivered events are always a prefix of the stream: everything below the lowest
open (pending or in-flight) realtime delivery.

Each function is a single SQL statement, so it reads one consistent snapshot.
"""

from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Now

from outbox.models import Delivery, OutboxEvent
from outbox.services import REALTIME_SINK

_MAX_SEQ = 2**63 - 1


@dataclass(frozen=True)
class StreamPosition:
    """Where a student's stream stands: `delivered` <= `last`.

    `last` is the highest committed seq; `delivered` the end of the delivered prefix.
    """

    delivered: int
    last: int


@dataclass(frozen=True)
class InFlight:
    """A realtime delivery the relay holds right now (it may already have pushed it)."""

    id: int
    attempts: int


def stream_position(*, student_id: int) -> StreamPosition:
    """The student's delivered prefix and last committed seq (0 and 0 before any event)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT COALESCE((SELECT last_seq FROM outbox_studentstream WHERE student_id = %(student)s), 0),
                   (SELECT min(seq) - 1 FROM outbox_delivery
                     WHERE sink = %(sink)s AND student_id = %(student)s AND status <> 'done')
            """,
            {"student": student_id, "sink": REALTIME_SINK},
        )
        row = cursor.fetchone()
    assert row is not None
    last = int(row[0])
    delivered = last if row[1] is None else min(int(row[1]), last)
    return StreamPosition(delivered=delivered, last=last)


def delivered_events_after(*, student_id: int, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` delivered events with seq > `after`, in seq order, in the WebSocket wire shape.

    Never returns an event whose realtime delivery is still open, nor anything behind one.
    """
    open_head = (
        Delivery.objects.filter(sink=REALTIME_SINK, student_id=student_id)
        .exclude(status=Delivery.Status.DONE)
        .order_by("seq")
        .values("seq")[:1]
    )
    events = (
        OutboxEvent.objects.filter(student_id=student_id, seq__gt=after)
        .annotate(open_head=Coalesce(open_head, Value(_MAX_SEQ)))
        .filter(seq__lt=F("open_head"))
        .order_by("seq")[:limit]
    )
    return [event.as_message() for event in events]


def realtime_in_flight(*, student_id: int, after: int) -> list[InFlight]:
    """The student's realtime deliveries beyond `after` that a relay has claimed but not settled."""
    return [
        InFlight(id=d.id, attempts=d.attempts)
        for d in Delivery.objects.filter(
            sink=REALTIME_SINK, student_id=student_id, seq__gt=after, status=Delivery.Status.IN_FLIGHT
        ).only("id", "attempts")
    ]


def still_in_flight(watched: list[InFlight]) -> list[InFlight]:
    """Those of `watched` that are still held by the same claim, with its lease not yet expired.

    A delivery that left this state is settled (done: readable from the database), handed back
    (pending: it will be pushed again) or re-claimed after its lease (it will be pushed again).
    """
    if not watched:
        return []
    attempts = {w.id: w.attempts for w in watched}
    # The lease is stamped with the database clock (now()); compare against the same clock.
    held = Delivery.objects.filter(id__in=list(attempts), status=Delivery.Status.IN_FLIGHT, available_at__gt=Now())
    return [InFlight(id=d.id, attempts=d.attempts) for d in held.only("id", "attempts") if d.attempts == attempts[d.id]]
