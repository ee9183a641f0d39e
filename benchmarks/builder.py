"""Builds a benchmark database's data from inside Django: `python -m benchmarks.builder '<spec json>'`.

Run by the orchestrator with DATABASE_URL naming a fresh `bench_*` database. Steps, in this order,
each optional in the spec:

- `seed`: {"students": N, "trainers": T, "capacity": C} students (users with API tokens), one course
  and T trainers;
- `history`: {"events": N} N delivered (`done`) `bench.ping` events with both deliveries, bulk
  inserted with generate_series, spread over the students, seqs continuing each student's stream;
- `backlog`: {"events": N, "batch": B, "part": k, "parts": P} N `bench.ping` events through
  `outbox.services.emit`, round-robin over the students, B events per transaction (with P > 1, this
  process's share: the students with index % P == k);
- `vacuum`: VACUUM ANALYZE (fresh statistics, as autovacuum would have them in a running system).

Prints one JSON line: the seeded ids and tokens and how long each step took.
"""

import json
import sys
import time
from typing import Any

import django


def main() -> int:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    django.setup()
    out: dict[str, Any] = {"timings": {}}
    if "seed" in spec:
        started = time.monotonic()
        out.update(seed(**spec["seed"]))
        out["timings"]["seed"] = time.monotonic() - started
    if "history" in spec:
        started = time.monotonic()
        history(**spec["history"])
        out["timings"]["history"] = time.monotonic() - started
    if "backlog" in spec:
        started = time.monotonic()
        backlog(**spec["backlog"])
        out["timings"]["backlog"] = time.monotonic() - started
    if spec.get("vacuum"):
        started = time.monotonic()
        vacuum()
        out["timings"]["vacuum"] = time.monotonic() - started
    print(json.dumps(out), flush=True)
    return 0


def seed(*, students: int, trainers: int = 1, capacity: int = 1_000_000) -> dict[str, Any]:
    from datetime import time
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from rest_framework.authtoken.models import Token

    from allocation.models import AvailabilityWindow, Trainer
    from purchases.models import Course

    user_model = get_user_model()
    unusable = make_password(None)
    users = user_model.objects.bulk_create(
        [user_model(username=f"bench{i}", email=f"bench{i}@example.com", password=unusable) for i in range(students)],
        batch_size=2000,
    )
    tokens = Token.objects.bulk_create(
        [Token(key=Token.generate_key(), user=u) for u in users],
        batch_size=2000,
    )
    course = Course.objects.create(title="Benchmark course", sessions_count=3, session_minutes=60, price=Decimal(240))
    created = Trainer.objects.bulk_create([Trainer(name=f"Trainer {i}", capacity=capacity) for i in range(trainers)])
    # Available all week (UTC): sessions are placed in free slots, and a trainer without any takes no one.
    AvailabilityWindow.objects.bulk_create(
        [AvailabilityWindow(trainer=t, weekday=d, starts=time(0), ends=time(0)) for t in created for d in range(7)]
    )
    return {"students": [[t.user.pk, t.key] for t in tokens], "course_id": course.pk}


def history(*, events: int) -> None:
    """`events` delivered events (and their two done deliveries) before any backlog, by SQL."""
    from django.db import connection, transaction

    from benchmarks.handlers import NOOP_HANDLER, PING
    from outbox.services import REALTIME_SINK

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT array_agg(id ORDER BY id) FROM auth_user")
        (ids,) = cursor.fetchone()
        # Event i goes to student ids[i % n] with that student's seq i / n + 1: gapless streams.
        cursor.execute(
            """
            INSERT INTO outbox_outboxevent
                (id, type, aggregate_type, aggregate_id, student_id, seq, payload, correlation_id, actor, created_at)
            SELECT gen_random_uuid(), %(type)s, 'student', s.sid::text, s.sid, i / %(n)s + 1,
                   jsonb_build_object('n', i), 'history:' || i, 'bench', now() - interval '1 day'
            FROM generate_series(0, %(events)s - 1) AS i,
                 LATERAL (SELECT (%(ids)s::bigint[])[i %% %(n)s + 1] AS sid) s
            """,
            {"type": PING, "n": len(ids), "events": events, "ids": ids},
        )
        cursor.execute(
            """
            INSERT INTO outbox_delivery
                (event_id, sink, student_id, seq, status, attempts, available_at, claimed_by, claimed_at,
                 last_error, created_at, done_at)
            SELECT e.id, s.sink, e.student_id, e.seq, 'done', 1, e.created_at, 'history', e.created_at,
                   '', e.created_at, e.created_at
            FROM outbox_outboxevent e CROSS JOIN (VALUES (%(realtime)s), (%(handler)s)) AS s(sink)
            """,
            {"realtime": REALTIME_SINK, "handler": NOOP_HANDLER},
        )
        cursor.execute(
            "INSERT INTO outbox_inboxentry (event_id, handler, processed_at) "
            "SELECT id, %s, created_at FROM outbox_outboxevent",
            [NOOP_HANDLER],
        )
        cursor.execute(
            """
            INSERT INTO outbox_studentstream (student_id, last_seq)
            SELECT student_id, max(seq) FROM outbox_outboxevent GROUP BY student_id
            ON CONFLICT (student_id) DO UPDATE SET last_seq = excluded.last_seq
            """
        )


def backlog(*, events: int, batch: int = 2000, part: int = 0, parts: int = 1) -> None:
    """`events` pending `bench.ping` events, each written by `emit()`, round-robin over the students.

    With `parts` > 1, this process writes only the events of the students whose index % parts is
    `part` (several builders share the work; no two write the same student's stream)."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from benchmarks.handlers import PING
    from outbox.services import Cause, emit

    ids = list(get_user_model().objects.order_by("id").values_list("id", flat=True))
    mine = [i for i in range(events) if (i % len(ids)) % parts == part]
    cause = Cause(actor="bench", correlation_id="bench-backlog")
    for start in range(0, len(mine), batch):
        with transaction.atomic():
            for i in mine[start : start + batch]:
                sid = ids[i % len(ids)]
                emit(
                    type=PING, student_id=sid, aggregate_type="student", aggregate_id=sid, payload={"n": i}, cause=cause
                )


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


if __name__ == "__main__":
    sys.exit(main())
