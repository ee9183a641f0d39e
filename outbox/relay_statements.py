"""The relay's per-batch statements (the claim, the settle) as server-side prepared statements on
Django's connection, and the session they run in: how it is set up, and when its plans are made again.

Used by `outbox.deliveries` only; the worker's statements are prepared by psycopg itself
(`WORKER_DB_PREPARE_THRESHOLD`, see `outbox/celery_app.py`).
"""

import math
import time
import weakref
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection

# Django connects with prepare_threshold=None (no prepared statements, for transaction-mode poolers)
# but its cursors bind on the client and never prepare anyway; the relay's two statements do.
_PREPARE_THRESHOLD = 5


def execute(sql: str, params: dict[str, Any] | list[Any]) -> list[tuple[Any, ...]]:
    """Run one of the relay's per-batch statements as a server-side prepared statement, on Django's
    connection (its transaction, if one is open), and return its rows.

    Django's cursors bind parameters on the client and so are never prepared: PostgreSQL parsed the
    claim on every batch. Prepared, PostgreSQL reuses a generic plan, which the relay's session has
    made afresh every few seconds (`session_prepare`), so it fits the table as it is. psycopg
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


# How often the relay's session drops its cached plans, so that the claim's and the settle's generic
# plans are made again for the tables as they are then (see `session_prepare`); and a claim slower than
# this (a backlog arrived since the plan was made) has the next one planned afresh at once.
REPLAN_SECONDS = 10.0
REPLAN_AFTER_SLOW_CLAIM_SECONDS = 0.002

# Connections (of this process) whose session is set up for the relay's statements, and when (monotonic)
# their plans were last dropped.
_relay_sessions: "weakref.WeakKeyDictionary[object, float]" = weakref.WeakKeyDictionary()


def session_prepare() -> None:
    """Set up this session for the relay's claim, once per connection, and drop its cached plans every
    REPLAN_SECONDS.

    JIT off: the claim's cost estimate grows with the backlog and crosses jit_above_cost, and compiling
    it then took longer than running it (60 ms against 25 ms for 500 deliveries out of a 200,000
    backlog).

    Generic plans, made afresh every REPLAN_SECONDS: the claim and the settle are prepared
    (`execute`), and their parameters (the relay's id, the ids to settle) do not change the
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
    # Plain statements (RELAY_DB_PREPARE off) keep no plan of ours: only the first setup is needed.
    if replanned is not None and (now - replanned < REPLAN_SECONDS or not settings.RELAY_DB_PREPARE):
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


def replan_next_time() -> None:
    """Have the next statement run on this connection's session planned afresh (see `session_prepare`)."""
    raw = connection.connection
    if raw is not None and raw in _relay_sessions:
        _relay_sessions[raw] = -math.inf
