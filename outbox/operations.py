"""Operator tooling for the outbox: status (read), retry and purge (writes).

Shared by `manage.py outbox` and the admin, so both act the same way. Every query here touches only
open deliveries (through the partial indexes on them) or walks the events table once by primary key:
none counts the delivered history, so they stay cheap however long the history grows.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.db.models.functions import Now
from django.utils import timezone

from outbox import deliveries, registry
from outbox.models import RELAY_ALIVE_WITHIN, Delivery, RelayHeartbeat
from outbox.services import NOTIFY_CHANNEL, REALTIME_SINK

Progress = Callable[[int, int | None], None]
"""Called after each batch with (done so far, expected total or None if unknown)."""


@dataclass(frozen=True)
class SinkStatus:
    sink: str
    due: int  # pending and due now: waiting for a relay
    scheduled: int  # pending with a later attempt time (backing off after a failure)
    in_flight: int
    dead: int
    failing: int  # pending after at least one failed attempt
    oldest_due_at: datetime | None
    lag: timedelta  # how long the oldest due delivery has been waiting (zero if none)


def outbox_status(*, now: datetime | None = None) -> list[SinkStatus]:
    """Per sink (every registered one, even when idle): due, scheduled, in-flight, dead, failing,
    and the lag, i.e. the age of the oldest due delivery.

    One grouped query over `status <> 'done'`, which is exactly the predicate of the partial index
    `outbox_delivery_open_idx`: its cost follows the open backlog, not the history.
    """
    now = now or timezone.now()
    due = Q(status=Delivery.Status.PENDING, available_at__lte=now)
    rows = (
        Delivery.objects.exclude(status=Delivery.Status.DONE)
        .values("sink")
        .annotate(
            due=Count("id", filter=due),
            scheduled=Count("id", filter=Q(status=Delivery.Status.PENDING, available_at__gt=now)),
            in_flight=Count("id", filter=Q(status=Delivery.Status.IN_FLIGHT)),
            dead=Count("id", filter=Q(status=Delivery.Status.DEAD)),
            failing=Count("id", filter=Q(status=Delivery.Status.PENDING, attempts__gt=0) & ~Q(last_error="")),
            oldest_due_at=Min("available_at", filter=due),
        )
        .order_by("sink")
    )
    found = {r["sink"]: r for r in rows}
    result = []
    for sink in sorted(known_sinks() | set(found)):
        r = found.get(sink, {})
        oldest = r.get("oldest_due_at")
        result.append(
            SinkStatus(
                sink=sink,
                due=r.get("due", 0),
                scheduled=r.get("scheduled", 0),
                in_flight=r.get("in_flight", 0),
                dead=r.get("dead", 0),
                failing=r.get("failing", 0),
                oldest_due_at=oldest,
                lag=max(now - oldest, timedelta(0)) if oldest else timedelta(0),
            )
        )
    return result


@dataclass(frozen=True)
class RelayStatus:
    relay_id: str
    started_at: datetime
    beat_at: datetime
    claimed_total: int
    alive: bool  # beat within `RELAY_ALIVE_WITHIN`


def relays_status(*, now: datetime | None = None) -> list[RelayStatus]:
    """Every relay that has beaten (`run_relay` beats every few seconds), newest beat first."""
    now = now or timezone.now()
    return [
        RelayStatus(
            relay_id=b.relay_id,
            started_at=b.started_at,
            beat_at=b.beat_at,
            claimed_total=b.claimed_total,
            alive=now - b.beat_at < RELAY_ALIVE_WITHIN,
        )
        for b in RelayHeartbeat.objects.order_by("-beat_at")[:50]
    ]


def known_sinks() -> set[str]:
    """Every sink a delivery can have: the inline realtime step and each registered handler."""
    return {REALTIME_SINK, *(h.name for h in _registered_handlers())}


def _registered_handlers() -> list[registry.Handler]:
    # The registry has no public "all handlers" yet (asked for in the issue report).
    return registry.all_handlers()


class UnknownDeliveries(LookupError):
    def __init__(self, ids: list[int]) -> None:
        super().__init__(f"no delivery with id {', '.join(map(str, ids))}")
        self.ids = ids


@dataclass(frozen=True)
class RetryResult:
    requeued: int
    skipped_ids: list[int] = field(default_factory=list)  # asked for by id, but done or in flight


def deliveries_retry(
    *,
    ids: Sequence[int] | None = None,
    sink: str | None = None,
    student_id: int | None = None,
    include_failing: bool = False,
    batch_size: int = 500,
    dry_run: bool = False,
    on_progress: Progress | None = None,
) -> RetryResult:
    """Requeue dead deliveries (and, with `include_failing`, pending ones that are backing off
    after a failure): status pending, due now, attempt budget reset, last error kept for the record
    until the next success clears it. Filters combine (ids AND sink AND student).

    Never touches a done or in-flight delivery: the UPDATE re-checks the status under the row lock,
    so a relay that claims a failing delivery meanwhile keeps it. Each batch commits on its own with
    a NOTIFY, so relays start on the first batch while later ones are still being requeued.
    Handlers are exactly-once through their inbox, so requeueing is always safe.
    Raises `UnknownDeliveries` before writing anything if an id in `ids` does not exist.
    With `dry_run`, `requeued` is how many match now, and nothing is written.
    """
    retryable = Q(status=Delivery.Status.DEAD)
    if include_failing:
        retryable |= Q(status=Delivery.Status.PENDING, attempts__gt=0) & ~Q(last_error="")
    selection = Delivery.objects.filter(retryable)
    skipped: list[int] = []
    if ids is not None:
        wanted = set(ids)
        found = dict(Delivery.objects.filter(id__in=wanted).values_list("id", "status"))
        if missing := sorted(wanted - set(found)):
            raise UnknownDeliveries(missing)
        skipped = sorted(i for i, s in found.items() if s in (Delivery.Status.DONE, Delivery.Status.IN_FLIGHT))
        selection = selection.filter(id__in=wanted)
    if sink is not None:
        selection = selection.filter(sink=sink)
    if student_id is not None:
        selection = selection.filter(student_id=student_id)
    total = selection.count()  # open deliveries only (partial index), never the history
    if dry_run:
        return RetryResult(requeued=total, skipped_ids=skipped)
    requeued, last_id = 0, 0
    while True:
        with transaction.atomic():
            batch = list(selection.filter(id__gt=last_id).order_by("id").values_list("id", flat=True)[:batch_size])
            if not batch:
                break
            requeued += (
                Delivery.objects.filter(retryable, id__in=batch)
                .select_for_update()
                .update(status=Delivery.Status.PENDING, available_at=Now(), attempts=0)
            )
            deliveries.unpark_streams_of(batch)
            _notify_relays()
        last_id = batch[-1]
        if on_progress:
            on_progress(requeued, total)
    return RetryResult(requeued=requeued, skipped_ids=skipped)


@dataclass(frozen=True)
class PurgeResult:
    scanned: int
    events: int
    deliveries: int
    inbox_entries: int


_PURGEABLE_SQL = """
SELECT e.id FROM outbox_outboxevent e
WHERE e.id = ANY(%(ids)s) AND e.created_at < %(cutoff)s
  AND NOT EXISTS (
      SELECT 1 FROM outbox_outboxevent o JOIN outbox_delivery d ON d.event_id = o.id
      WHERE o.correlation_id = e.correlation_id AND d.status <> 'done'
  )
"""


def events_purge(
    *,
    older_than: timedelta,
    batch_size: int = 1000,
    dry_run: bool = False,
    on_progress: Progress | None = None,
) -> PurgeResult:
    """Delete delivered events older than `older_than`, with their deliveries and inbox entries.

    Keeps what dedupe and diagnosis need: an event goes only when every delivery of its whole chain
    (same correlation id) is done, so nothing can deliver it again (no inbox row is dropped that a
    redelivery could still consult) and a chain that is stuck stays traceable in full. Per-student
    seq counters and payments are never touched: seqs are never reused, and the webhook's
    payment-id dedupe is unaffected. Walks the table once by primary key in batches, each its own
    short transaction; the total for progress is the planner's estimate (no COUNT(*)).
    With `dry_run`, counts what would go and deletes nothing.
    """
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    cutoff = timezone.now() - older_than
    estimate = estimated_rows("outbox_outboxevent")
    after = UUID(int=0)
    scanned = events = deliveries = inbox = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT id FROM outbox_outboxevent WHERE id > %s ORDER BY id LIMIT %s", [after, batch_size])
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                break
            cursor.execute(_PURGEABLE_SQL, {"ids": ids, "cutoff": cutoff})
            doomed = [row[0] for row in cursor.fetchall()]
            if doomed and dry_run:
                cursor.execute("SELECT count(*) FROM outbox_delivery WHERE event_id = ANY(%s)", [doomed])
                deliveries += cursor.fetchone()[0]
                cursor.execute("SELECT count(*) FROM outbox_inboxentry WHERE event_id = ANY(%s)", [doomed])
                inbox += cursor.fetchone()[0]
            elif doomed:
                # Children first: Django's CASCADE is not in the database schema.
                cursor.execute("DELETE FROM outbox_delivery WHERE event_id = ANY(%s)", [doomed])
                deliveries += cursor.rowcount
                cursor.execute("DELETE FROM outbox_inboxentry WHERE event_id = ANY(%s)", [doomed])
                inbox += cursor.rowcount
                cursor.execute("DELETE FROM outbox_outboxevent WHERE id = ANY(%s)", [doomed])
        events += len(doomed)
        scanned += len(ids)
        after = ids[-1]
        if on_progress:
            on_progress(scanned, max(estimate, scanned) if estimate is not None else None)
    return PurgeResult(scanned=scanned, events=events, deliveries=deliveries, inbox_entries=inbox)


def estimated_rows(table: str) -> int | None:
    """The planner's row estimate (kept by autovacuum / ANALYZE); None if never analysed."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] >= 0 else None


def _notify_relays() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
