"""The delivery state machine: claim (with a lease), settle done, fail with backoff, release.

pending --claim--> in_flight --done--> done
                      |--fail--> pending (backoff) | dead (after OUTBOX_MAX_ATTEMPTS, handlers only)
                      |--lease expires--> claimable again (crashed relay or worker)

Every function here is one short statement in its own transaction: nothing holds a row lock while
the relay talks to Redis or a worker runs a handler.
"""

import functools
import json
import math
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection

from outbox.models import OutboxEvent
from outbox.services import REALTIME_SINK

# "Not before its stream's dead letter is retried" (a finite date: Python can't load 'infinity').
PARKED_UNTIL = datetime(9999, 1, 1, tzinfo=UTC)

# Joined into the relay's hot statements (claim, settle done): their transaction COMMITs without
# waiting for the WAL to reach the disk, which under load took up to tens of ms, twice per batch, on
# the way from an event's COMMIT to its push. Safe because what they write can be lost: if PostgreSQL
# crashes, the last fraction of a second of claims and settles is undone (as a whole: the WAL keeps
# commit order, and any later synchronous COMMIT flushes them), and those deliveries are made again,
# which the inbox and the seq-tagged pushes absorb. Local to the statement's own transaction (the
# relay runs them in autocommit), so the session, a pooled connection or a handler run in the same
# process (eager Celery) keeps waiting for the disk.
RELAY_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS relay_commit"

# Heads: the oldest open delivery of each (sink, student) stream that is due; SKIP LOCKED lets several
# relays claim disjoint streams. Run: each head plus the contiguous due deliveries behind it, so a
# backlog of one student moves in batches without ever reordering. The outer UPDATE re-checks the
# status, so a delivery a worker has just finished is never taken back.
# The batch size and the leases are written into the text as literals (`_claim_sql`): the statement is
# prepared (`_execute_prepared`), and with them as parameters PostgreSQL could switch to a generic plan
# that does not know the LIMIT; the relay id, the one parameter left, does not change the plan.
_CLAIM_SQL = f"""
WITH heads AS (
    SELECT d.id, d.sink, d.student_id, d.seq
    FROM outbox_delivery d
    WHERE d.status IN ('pending', 'in_flight') AND d.available_at <= now()
      -- "d is its stream's oldest open delivery", written as an index probe (outbox_delivery_open_idx)
      -- per candidate: a NOT EXISTS here let the planner pick a hash anti-join whose cost grew with
      -- the square of one student's backlog (20,000 blocked deliveries: 15 s per claim).
      AND d.seq = (
          SELECT e.seq FROM outbox_delivery e
          WHERE e.sink = d.sink AND e.student_id = d.student_id AND e.status <> 'done'
          ORDER BY e.seq LIMIT 1
      )
    ORDER BY d.available_at, d.id
    LIMIT {{limit}}
    FOR UPDATE OF d SKIP LOCKED
), run AS (
    SELECT id FROM (
        SELECT f.id,
               row_number() OVER w AS n,
               bool_and(f.status IN ('pending', 'in_flight') AND f.available_at <= now()) OVER w AS contiguous
        FROM heads h
        -- Each stream's first open deliveries, no more than the batch can take from it: with as many
        -- heads as the batch has room (a wide backlog) that is the head alone, not the whole backlog.
        CROSS JOIN LATERAL (
            SELECT f.id, f.sink, f.student_id, f.seq, f.status, f.available_at
            FROM outbox_delivery f
            WHERE f.sink = h.sink AND f.student_id = h.student_id AND f.seq >= h.seq AND f.status <> 'done'
            ORDER BY f.seq
            LIMIT ceil({{limit}}::numeric / greatest((SELECT count(*) FROM heads), 1))
        ) f
        WINDOW w AS (PARTITION BY f.sink, f.student_id ORDER BY f.seq)
    ) candidates
    WHERE contiguous
    ORDER BY n
    LIMIT {{limit}}
)
UPDATE outbox_delivery u
SET status = 'in_flight',
    attempts = u.attempts + 1,
    available_at = now() + make_interval(secs => CASE WHEN u.sink = '{REALTIME_SINK}'
                                                      THEN {{lease}} ELSE {{handler_lease}} END),
    claimed_by = %(relay)s,
    claimed_at = now()
FROM run, outbox_outboxevent e, {RELAY_COMMIT}
WHERE u.id = run.id AND u.status IN ('pending', 'in_flight') AND e.id = u.event_id
RETURNING u.id, u.event_id, u.sink, u.student_id, u.seq, u.attempts,
    -- What the relay pushes, so it need not read the events again (handlers' workers load their own).
    CASE WHEN u.sink = '{REALTIME_SINK}' THEN e.type END,
    CASE WHEN u.sink = '{REALTIME_SINK}' THEN e.payload::text END,
    CASE WHEN u.sink = '{REALTIME_SINK}' THEN e.created_at END
"""


@dataclass(frozen=True)
class Claimed:
    id: int
    event_id: str
    sink: str
    student_id: int
    seq: int
    attempts: int
    # The event's wire message (`OutboxEvent.as_message()`), for realtime deliveries.
    message: dict[str, object] | None = field(default=None, compare=False, repr=False)


def claim(*, relay_id: str, limit: int) -> list[Claimed]:
    """Lease up to `limit` due deliveries, each (sink, student) stream in seq order, no stream twice.

    Commits without waiting for the disk (`RELAY_COMMIT`), if it runs in a transaction of its own.
    """
    _relay_session()
    sql = _claim_sql(int(limit), float(settings.OUTBOX_LEASE_SECONDS), float(settings.OUTBOX_HANDLER_LEASE_SECONDS))
    started = time.monotonic()
    rows = _execute_prepared(sql, {"relay": relay_id})
    if time.monotonic() - started > REPLAN_AFTER_SLOW_CLAIM_SECONDS:
        _replan_next_time()
    claimed = [
        Claimed(id=r[0], event_id=str(r[1]), sink=r[2], student_id=r[3], seq=r[4], attempts=r[5], message=_message(r))
        for r in rows
    ]
    claimed.sort(key=lambda c: (c.sink, c.student_id, c.seq))
    return claimed


@functools.lru_cache(maxsize=16)
def _claim_sql(limit: int, lease: float, handler_lease: float) -> str:
    """The claim's text with its literals: written into SQL, so checked to be plain numbers (the
    settings are validated too; `python -O` would drop an assert)."""
    if not (math.isfinite(lease) and math.isfinite(handler_lease) and limit > 0):
        raise ValueError(f"claim: limit {limit!r} and leases {lease!r}, {handler_lease!r} must be finite and positive")
    return _CLAIM_SQL.format(limit=limit, lease=repr(lease), handler_lease=repr(handler_lease))


# Django connects with prepare_threshold=None (no prepared statements, for transaction-mode poolers)
# but its cursors bind on the client and never prepare anyway; the relay's two statements do.
_PREPARE_THRESHOLD = 5


def _execute_prepared(sql: str, params: dict[str, Any] | list[Any]) -> list[tuple[Any, ...]]:
    """Run one of the relay's per-batch statements as a server-side prepared statement, on Django's
    connection (its transaction, if one is open), and return its rows.

    Django's cursors bind parameters on the client and so are never prepared: PostgreSQL parsed the
    claim on every batch. Prepared, PostgreSQL reuses a generic plan, which the relay's session has
    made afresh every few seconds (`_relay_session`), so it fits the table as it is. psycopg
    prepares a statement per connection and text, once; its errors are Django's, as from a Django cursor.
    With `RELAY_DB_PREPARE` off (a transaction-mode pooler), a plain statement."""
    if not settings.RELAY_DB_PREPARE:
        with connection.cursor() as plain:
            plain.execute(sql, params)
            return plain.fetchall() if plain.description is not None else []
    connection.ensure_connection()
    raw = connection.connection
    assert raw is not None
    if raw.prepare_threshold is None:
        raw.prepare_threshold = _PREPARE_THRESHOLD
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchall() if cursor.description is not None else []


def claim_took_all(claimed: list[Claimed], *, limit: int) -> bool:
    """Whether a claim of up to `limit` took everything that was due when it ran: fewer rows than the
    limit, and no stream's run cut at its share (at most ⌈limit / streams⌉ each, see _CLAIM_SQL). Then
    claiming again at once would find only what committed since, and that has sent a NOTIFY."""
    if len(claimed) >= limit:
        return False
    per_stream = Counter((c.sink, c.student_id) for c in claimed)
    share = math.ceil(limit / max(len(per_stream), 1))
    return all(n < share for n in per_stream.values())


def _message(row: tuple[Any, ...]) -> dict[str, object] | None:
    if row[6] is None:
        return None
    event = OutboxEvent(
        id=row[1], type=row[6], student_id=row[3], seq=row[4], payload=json.loads(row[7]), created_at=row[8]
    )
    return event.as_message()


# How often the relay's session drops its cached plans, so that the claim's and the settle's generic
# plans are made again for the tables as they are then (see `_relay_session`); and a claim slower than
# this (a backlog arrived since the plan was made) has the next one planned afresh at once.
REPLAN_SECONDS = 10.0
REPLAN_AFTER_SLOW_CLAIM_SECONDS = 0.002

# Connections (of this process) whose session is set up for the relay's statements, and when (monotonic)
# their plans were last dropped.
_relay_sessions: "weakref.WeakKeyDictionary[object, float]" = weakref.WeakKeyDictionary()


def _relay_session() -> None:
    """Set up this session for the relay's claim, once per connection, and drop its cached plans every
    REPLAN_SECONDS.

    JIT off: the claim's cost estimate grows with the backlog and crosses jit_above_cost, and compiling
    it then took longer than running it (60 ms against 25 ms for 500 deliveries out of a 200,000
    backlog).

    Generic plans, made afresh every REPLAN_SECONDS: the claim and the settle are prepared
    (`_execute_prepared`), and their parameters (the relay's id, the ids to settle) do not change the
    best plan, so a generic plan is as good as a custom one while it is made for the table as it is;
    planning every run afresh cost 0.5 ms per claim, three quarters of its time. But a generic plan is
    kept until the table's statistics change (ANALYZE), and a relay starts on a small or empty outbox
    table: on a server without autovacuum, the plan cached then was still used once the table had
    grown, and claims took 50 ms to 1.1 s at 50 purchases/s. `DISCARD PLANS` every REPLAN_SECONDS
    makes the next run plan again, for the table's size then, whatever the server's autovacuum does;
    and so does a slow claim (over REPLAN_AFTER_SLOW_CLAIM_SECONDS): a relay that planned on a quiet
    table and then met a backlog drained 10,000 events at 6,100 a second instead of 8,800 until the
    next replan. In a backlog claims are slow anyway, and a plan per claim costs them little.
    The plan is forced generic: left to choose, PostgreSQL weighs a new generic plan against the
    average of every custom plan since the statement was prepared, made on the smaller table, and
    half the claims were still planned afresh.
    """
    connection.ensure_connection()
    raw = connection.connection
    now = time.monotonic()
    replanned = _relay_sessions.get(raw) if raw is not None else None
    if replanned is not None and now - replanned < REPLAN_SECONDS:
        return
    with connection.cursor() as cursor:
        if replanned is not None:
            cursor.execute("DISCARD PLANS")
        else:
            cursor.execute("SET jit = off")
            if settings.RELAY_DB_PREPARE:
                cursor.execute("SET plan_cache_mode = force_generic_plan")
    if raw is not None and not connection.in_atomic_block:  # else a rollback would undo the SET
        _relay_sessions[raw] = now


def _replan_next_time() -> None:
    raw = connection.connection
    if raw is not None and raw in _relay_sessions:
        _relay_sessions[raw] = -math.inf


def settle_done(ids: list[int]) -> None:
    """Mark deliveries done (idempotent)."""
    if ids:
        # Plain SQL, prepared: the relay settles every batch, and building the ORM's UPDATE cost more
        # than it.
        _execute_prepared(
            "UPDATE outbox_delivery SET status = 'done', done_at = statement_timestamp(), last_error = '' "
            f"FROM {RELAY_COMMIT} WHERE id = ANY(%s) AND status <> 'done'",
            [ids],
        )


def settle_failed(ids: list[int], *, error: str, may_dead_letter: bool) -> None:
    """Schedule a retry with exponential backoff and jitter; dead-letter after the attempt budget.

    Infrastructure failures (Redis or the broker down) pass `may_dead_letter=False`: they back off
    but never dead-letter, because nothing is wrong with the event.
    """
    if not ids:
        return
    # A dead letter parks the rest of its stream (they must wait for it anyway): parked deliveries
    # are not due, so the relay's claim never scans a blocked backlog. `deliveries_retry` unparks.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH failed AS (
                UPDATE outbox_delivery
                SET status = CASE WHEN %(may_dead)s AND attempts >= %(max)s THEN 'dead' ELSE 'pending' END,
                    available_at = now() + make_interval(secs =>
                        least(%(cap)s, %(base)s * power(2, greatest(attempts - 1, 0))) * (0.5 + random() / 2)),
                    last_error = %(error)s
                WHERE id = ANY(%(ids)s) AND status <> 'done'
                RETURNING sink, student_id, seq, status
            )
            UPDATE outbox_delivery f SET available_at = %(parked)s
            FROM failed
            WHERE failed.status = 'dead' AND f.sink = failed.sink AND f.student_id = failed.student_id
              AND f.seq > failed.seq AND f.status = 'pending'
            """,
            {
                "ids": ids,
                "error": error[:4000],
                "may_dead": may_dead_letter,
                "max": settings.OUTBOX_MAX_ATTEMPTS,
                "cap": settings.OUTBOX_BACKOFF_MAX_SECONDS,
                "base": settings.OUTBOX_BACKOFF_BASE_SECONDS,
                "parked": PARKED_UNTIL,
            },
        )


def unpark_streams_of(ids: list[int]) -> None:
    """Make the parked deliveries behind these (requeued) deliveries due again, in the caller's transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE outbox_delivery f SET available_at = now()
            FROM (SELECT DISTINCT sink, student_id FROM outbox_delivery WHERE id = ANY(%(ids)s)) s
            WHERE f.sink = s.sink AND f.student_id = s.student_id AND f.status = 'pending'
              AND f.available_at >= %(parked)s
            """,
            {"ids": ids, "parked": PARKED_UNTIL},
        )


def students_of(ids: list[int]) -> dict[int, int]:
    """Each delivery's student (deliveries purged meanwhile are left out)."""
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, student_id FROM outbox_delivery WHERE id = ANY(%s)", [ids])
        return dict(cursor.fetchall())


def release(ids: list[int]) -> None:
    """Hand deliveries back unattempted (their stream's head failed first): due now, attempt not
    counted; parked instead if the stream's head has been dead-lettered."""
    if ids:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE outbox_delivery d
                SET status = 'pending',
                    attempts = greatest(d.attempts - 1, 0),
                    available_at = CASE WHEN EXISTS (
                        SELECT 1 FROM outbox_delivery e
                        WHERE e.sink = d.sink AND e.student_id = d.student_id AND e.seq < d.seq AND e.status = 'dead'
                    ) THEN %(parked)s ELSE now() END
                WHERE d.id = ANY(%(ids)s) AND d.status = 'in_flight'
                """,
                {"ids": ids, "parked": PARKED_UNTIL},
            )
