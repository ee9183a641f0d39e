"""The outbox: events, their deliveries per sink, the handlers' inbox, per-student sequences.

These rows are written only by `outbox.services.emit` (events, deliveries, sequences), by the relay
(delivery state) and by the handler runner (inbox, delivery state).
"""

import os
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.postgres.indexes import BrinIndex
from django.db import models


def new_event_id() -> uuid.UUID:
    """A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.

    Time-ordered, so the indexes keyed by event id (the events', the deliveries' and the inbox's) take
    new rows at one end, in pages that are already in memory, instead of at random places all over an
    index that grows with history. Unique as a random UUID is, within a millisecond.
    """
    value = (time.time_ns() // 1_000_000 & (1 << 48) - 1) << 80 | int.from_bytes(os.urandom(10))
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # variant RFC 9562
    return uuid.UUID(int=value)


class StudentStream(models.Model):
    """The last seq handed out for one student; its row lock makes seqs gapless and commit-ordered."""

    student = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"student {self.student_id} at seq {self.last_seq}"


class OutboxEvent(models.Model):
    """An immutable fact, written in the same transaction as the state it describes.

    The table also has a `tx_id xid8` column (default `pg_current_xact_id()`, see migration 0002),
    not modelled here, which the domain tables' deferred constraint triggers look up at COMMIT.
    """

    id = models.UUIDField(primary_key=True, default=new_event_id, editable=False)
    type = models.CharField(max_length=64)
    aggregate_type = models.CharField(max_length=32)
    aggregate_id = models.CharField(max_length=64)
    student = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    seq = models.BigIntegerField()
    payload = models.JSONField(default=dict)
    correlation_id = models.CharField(max_length=128, db_index=True)
    causation_id = models.UUIDField(null=True, blank=True)
    actor = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["student", "seq"], name="outbox_event_student_seq_uniq"),
        ]
        indexes = [
            models.Index(fields=["aggregate_type", "aggregate_id"], name="outbox_event_aggregate_idx"),
            # Append-only, so created_at follows the heap: a tiny BRIN index serves age filters.
            BrinIndex(fields=["created_at"], name="outbox_event_created_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.seq} student={self.student_id}"

    def as_message(self) -> dict[str, object]:
        """The wire shape shared by the WebSocket, the events feed and the Channels push."""
        return {
            "id": str(self.id),
            "seq": self.seq,
            "type": self.type,
            "occurred_at": self.created_at.isoformat(),
            "data": self.payload,
        }


class Delivery(models.Model):
    """One event's delivery to one sink: the inline realtime step or a subscribed handler.

    `available_at` is the next attempt time while pending and the lease expiry while in flight.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        IN_FLIGHT = "in_flight"
        DONE = "done"
        DEAD = "dead"

    # No index of its own: the unique (event, sink) constraint's index serves lookups by event, and
    # every row version (a delivery has three: pending, in flight, done) paid for a second one.
    event = models.ForeignKey(OutboxEvent, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    sink = models.CharField(max_length=100)
    # Denormalised from the event so the relay orders and claims without a join.
    student_id = models.BigIntegerField()
    seq = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    available_at = models.DateTimeField()
    claimed_by = models.CharField(max_length=128, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["event", "sink"], name="outbox_delivery_event_sink_uniq")]
        indexes = [
            # The relay's scan for due work; done rows never enter it, so history does not slow it.
            models.Index(
                fields=["available_at"],
                name="outbox_delivery_due_idx",
                condition=models.Q(status__in=["pending", "in_flight"]),
            ),
            # "Is an earlier delivery of this student's stream still open?" (per-student order).
            models.Index(
                fields=["sink", "student_id", "seq"],
                name="outbox_delivery_open_idx",
                condition=~models.Q(status="done"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sink} <- {self.event_id} [{self.status}]"


class InboxEntry(models.Model):
    """Proof that `handler` applied `event_id`; written in the handler's own transaction."""

    event_id = models.UUIDField()
    handler = models.CharField(max_length=100)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "inbox entries"
        constraints = [models.UniqueConstraint(fields=["event_id", "handler"], name="outbox_inbox_uniq")]

    def __str__(self) -> str:
        return f"{self.handler} applied {self.event_id}"


# A running relay beats every few seconds (`outbox.relay.heartbeat`); a beat older than this means it is gone.
# The one definition behind /healthz, `outbox status` (and its verdict) and `trace`.
RELAY_ALIVE_WITHIN = timedelta(seconds=30)


class RelayHeartbeat(models.Model):
    """Each running relay's proof of life and its running total, for /healthz, /metrics and status."""

    relay_id = models.CharField(max_length=128, primary_key=True)
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField()
    claimed_total = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.relay_id} (last beat {self.beat_at:%H:%M:%S})"
