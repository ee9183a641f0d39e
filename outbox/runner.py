"""Runs a handler over its deliveries with exactly-once effect.

Each delivery is applied in a transaction that locks the delivery row, writes the inbox row
`(event_id, handler)`, marks the delivery done and runs the handler (whose service writes state and new
events): all of it commits, or none. A redelivered event finds its inbox row and does nothing. If a
delivery fails, that student's later deliveries in the batch are handed back unattempted, so one
student's order is kept and other students go on.

Cheap handlers share transactions: a batch runs in chunks, one transaction (and one COMMIT, the cost
that dominated) per chunk, sized to about 2 ms of handler time, with a short lock timeout. If
anything in a chunk fails (a handler raises, a lock wait times out, COMMIT is refused) the chunk rolls
back as a whole and its deliveries run again one per transaction, where a failure is that delivery's
alone. Deliveries of one chunk share a transaction id, so the outbox guard's "an event in the same
transaction" check (docs/architecture.md) sees the chunk's events together; each delivery is a different
event, so this matters only for a handler that changes another delivery's purchase without an event.
"""

import logging
import time
import traceback
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection, transaction

from kernel.rows import instance_from_row
from outbox import deliveries, metrics, registry
from outbox.models import OutboxEvent
from outbox.services import NOTIFY_CHANNEL

logger = logging.getLogger(__name__)


def run_handler_batch(*, sink: str, delivery_ids: list[int]) -> None:
    """Apply `sink`'s handler to the deliveries. Stopped by Celery's soft time limit (set inside the
    handler lease, see settings), it hands back what it has not finished, unattempted: running out of
    time is not the handler's failure, and the next relay pass delivers the rest."""
    try:
        _run_batch(sink=sink, delivery_ids=delivery_ids)
    except SoftTimeLimitExceeded:
        logger.warning("handler %s: out of time (soft time limit); handing back the unfinished deliveries", sink)
        deliveries.release(list(delivery_ids))  # only those still in flight: done ones stay done


def _run_batch(*, sink: str, delivery_ids: list[int]) -> None:
    handler = registry.get(sink)
    # Each delivery's student and event, filled in by `_apply` from the statement that locks it: the
    # batch is not read beforehand (that read was a round trip per task). Events are immutable.
    found: dict[int, tuple[int, Any]] = {}
    events: dict[Any, OutboxEvent] = {}
    ids = list(delivery_ids)
    blocked: set[int] = set()  # students whose stream stopped in this batch
    # The students of the deliveries not applied yet, read once a stream has stopped (rare): its later
    # deliveries then go back together, without a transaction each.
    students: dict[int, int] | None = None

    def held_back(delivery_id: int) -> bool:
        known = found.get(delivery_id)
        return (known[0] if known else (students or {}).get(delivery_id)) in blocked

    pos = 0
    while pos < len(ids):
        if blocked and students is None:
            students = deliveries.students_of(ids[pos:])
        size = _chunk_size(sink)
        chunk, pos = ids[pos : pos + size], pos + size
        # A delivery whose student is known to be blocked goes back without a transaction; the others
        # are checked by `_apply` itself (an open earlier delivery makes them wait), so order holds
        # whether or not this batch has seen their student yet.
        held = [d for d in chunk if held_back(d)]
        if held:
            deliveries.release(held)
        chunk = [d for d in chunk if d not in held]
        if len(chunk) > 1:
            started = time.perf_counter()
            try:
                stuck = _apply(handler, chunk, found, events, lock_timeout=CHUNK_LOCK_TIMEOUT)
            except SoftTimeLimitExceeded:
                raise
            except Exception as exc:  # a handler raised, a lock wait timed out, or COMMIT was refused
                logger.info("handler %s: chunk of %d rolled back (%r); one by one", sink, len(chunk), exc)
                _learn(sink, None)
            else:
                elapsed = time.perf_counter() - started
                for _ in chunk:
                    metrics.HANDLER_SECONDS.labels(sink).observe(elapsed / len(chunk))
                if stuck:
                    blocked.update(found[d][0] for d in stuck)
                    deliveries.release(stuck)
                continue
        for delivery_id in chunk:
            if held_back(delivery_id):
                deliveries.release([delivery_id])
            else:
                _run_alone(handler, delivery_id, found, events, blocked)


# The events are read by `_APPLY_SQL` with the deliveries it locks (a separate read of the batch, and
# before that the ORM's `Delivery.objects...select_related("event")`, whose compile and model building
# were a tenth of the worker's CPU) and built as the ORM builds them: `from_db`, every column in the
# model's field order, so handlers read the same event.
def _event(columns: list[Any]) -> OutboxEvent:
    event = instance_from_row(OutboxEvent, columns)
    assert event is not None
    return event


def _run_alone(
    handler: registry.Handler,
    delivery_id: int,
    found: dict[int, tuple[int, Any]],
    events: dict[Any, OutboxEvent],
    blocked: set[int],
) -> None:
    """One delivery in a transaction of its own: a failure is this delivery's alone."""
    started = time.perf_counter()
    try:
        stuck = _apply(handler, [delivery_id], found, events, lock_timeout=None)
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        # What `_apply` read before the failure names the event (nothing, if its statement failed).
        student_id, event_id = found.get(delivery_id, (None, None))
        if student_id is not None:
            blocked.add(student_id)
        context = {"delivery_id": delivery_id, "sink": handler.name, "event_id": event_id}
        context["correlation_id"] = events[event_id].correlation_id if event_id in events else None
        metrics.HANDLER_FAILURES.labels(handler.name).inc()
        logger.exception("handler %s failed on delivery %s", handler.name, delivery_id, extra=context)
        deliveries.settle_failed(
            [delivery_id], error="".join(traceback.format_exception_only(exc)).strip(), may_dead_letter=True
        )
        return
    if stuck:  # an earlier delivery of the stream is still open: this one must wait its turn
        blocked.add(found[delivery_id][0])
        deliveries.release(stuck)
        return
    metrics.HANDLER_SECONDS.labels(handler.name).observe(time.perf_counter() - started)


# One round trip for a whole chunk, in its transaction: lock the deliveries (of this sink: an id of
# another is ignored), re-check each is still open and is its stream's next (no open delivery before
# it, other than chunk members, which this statement settles in the same go, unless dead), record
# their inbox rows, mark them done and return their students and events. The
# handlers then run in the same transaction: if one raises, all of it rolls back. And NOTIFY (sent at
# COMMIT): these streams' next deliveries are claimable then, so the relays need not wait for their
# next poll (a student's backlog would move one delivery per poll).
_APPLY_SQL = f"""
WITH target AS (
    SELECT id, sink, student_id, seq, status, event_id FROM outbox_delivery
    WHERE id = ANY(%(ids)s) AND sink = %(handler)s ORDER BY id FOR UPDATE
), state AS (
    SELECT t.id, t.event_id, t.student_id,
           t.status IN ('done', 'dead') AS closed,
           EXISTS (
               SELECT 1 FROM outbox_delivery e
               WHERE e.sink = t.sink AND e.student_id = t.student_id AND e.seq < t.seq AND e.status <> 'done'
                 AND (e.status = 'dead' OR e.id <> ALL(%(ids)s))
           ) AS earlier_open
    FROM target t
), inbox AS (
    INSERT INTO outbox_inboxentry (event_id, handler, processed_at)
    SELECT event_id, %(handler)s, now() FROM state WHERE NOT closed AND NOT earlier_open
    ON CONFLICT (event_id, handler) DO NOTHING
    RETURNING event_id
), settled AS (
    UPDATE outbox_delivery d SET status = 'done', last_error = '', done_at = now()
    FROM state s WHERE d.id = s.id AND NOT s.closed AND NOT s.earlier_open
)
SELECT s.id, s.closed, s.earlier_open, s.event_id IN (SELECT event_id FROM inbox), s.student_id,
       {", ".join(f"e.{f.column}" for f in OutboxEvent._meta.concrete_fields)}
FROM state s JOIN outbox_outboxevent e ON e.id = s.event_id CROSS JOIN (SELECT pg_notify(%(channel)s, '')) AS wake
"""


def _apply(
    handler: registry.Handler,
    ids: list[int],
    found: dict[int, tuple[int, Any]],
    events: dict[Any, OutboxEvent],
    *,
    lock_timeout: str | None,
) -> list[int]:
    """Apply `ids` (in this order) in one transaction; returns those that must wait their turn."""
    ran, in_handler = 0, 0.0
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        if lock_timeout:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])
        cursor.execute(_APPLY_SQL, {"ids": ids, "handler": handler.name, "channel": NOTIFY_CHANNEL})
        state = {}
        for delivery_id, closed, earlier_open, first_time, student_id, *event in cursor.fetchall():
            state[delivery_id] = (closed, earlier_open, first_time)
            found[delivery_id] = (student_id, event[0])
            if event[0] not in events:
                events[event[0]] = _event(event)
        stuck = []
        for delivery_id in ids:
            if delivery_id not in state:  # purged meanwhile
                continue
            closed, earlier_open, first_time = state[delivery_id]
            if earlier_open:
                stuck.append(delivery_id)
            elif not closed and first_time:
                started = time.perf_counter()
                handler.func(events[found[delivery_id][1]])
                in_handler += time.perf_counter() - started
                ran += 1
    if ran:
        _learn(handler.name, in_handler / ran)
    return stuck


# -- chunk sizing ---------------------------------------------------------------------------------

# A chunk's transaction holds the locks its handlers took until it commits, so a chunk holds each for
# at most the time its later handlers run: size chunks to about CHUNK_TARGET_SECONDS of handler time,
# from the handler's recent time per delivery in this process (learnt from the first deliveries,
# which run alone). Cheap handlers get up to MAX_CHUNK deliveries per COMMIT; a handler that takes more
# than half the target (the domain handlers take a few ms: several statements and an event each) runs
# one delivery per transaction, as if chunks did not exist, so its locks are held no longer than before.
CHUNK_TARGET_SECONDS = 0.002
MAX_CHUNK = 100
FIRST_CHUNK = 1
# A chunk never waits long on a lock: it rolls back and its deliveries run one by one (no timeout), so
# chunks can't deadlock with each other for longer than this, whatever their handlers lock.
CHUNK_LOCK_TIMEOUT = "100ms"
_per_delivery: dict[str, float] = {}


def _chunk_size(sink: str) -> int:
    cost = _per_delivery.get(sink)
    if cost is None:
        return FIRST_CHUNK
    return max(1, min(MAX_CHUNK, int(CHUNK_TARGET_SECONDS / max(cost, 1e-6))))


def _learn(sink: str, seconds_per_delivery: float | None) -> None:
    """Fold in a handler's time per delivery; None (a chunk rolled back) halves the next chunks."""
    if seconds_per_delivery is None:
        _per_delivery[sink] = 2 * _per_delivery.get(sink, CHUNK_TARGET_SECONDS / FIRST_CHUNK)
        return
    previous = _per_delivery.get(sink)
    _per_delivery[sink] = seconds_per_delivery if previous is None else 0.7 * previous + 0.3 * seconds_per_delivery
