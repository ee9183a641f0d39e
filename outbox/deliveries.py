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
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection

from outbox import relay_statements
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
# prepared and runs a generic plan (`relay_statements`), which with them as parameters would not know
# the LIMIT; the relay id, the one parameter left, does not change the plan.
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
    relay_statements.session_prepare()
    sql = _claim_sql(int(limit), float(settings.OUTBOX_LEASE_SECONDS), float(settings.OUTBOX_HANDLER_LEASE_SECONDS))
    started = time.monotonic()
    rows = relay_statements.execute(sql, {"relay": relay_id})
    if time.monotonic() - started > relay_statements.REPLAN_AFTER_SLOW_CLAIM_SECONDS:
        relay_statements.replan_next_time()
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


def settle_done(ids: list[int]) -> None:
    """Mark deliveries done (idempotent)."""
    if ids:
        # Plain SQL, prepared: the relay settles every batch, and building the ORM's UPDATE cost more
        # than it.
        relay_statements.execute(
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
