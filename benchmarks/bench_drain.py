"""2. Relay drain rate: a backlog of 10,000 and of 100,000 events, drained by one relay and by two.

The backlog: `bench.ping` events written by `outbox.services.emit` in transactions of 2,000, round-
robin over students (5 events each for 10,000, 10 each for 100,000). `bench.ping` has two sinks, like
a domain event: the relay's realtime step (invalidate the student's cache, push to their group) and a
handler that does nothing (`benchmarks.handlers`), run by a real Celery worker (prefork, 2 processes)
through the product's runner (inbox row + settle). So the figure is the outbox machinery's own cost,
not the domain handlers'. Each run gets a fresh copy of the backlog database.

Timing: the orchestrator holds `LOCK TABLE outbox_delivery IN EXCLUSIVE MODE` while the worker and the
relays start; every relay's first claim blocks on it. The clock starts when the lock is released (all
relays start together) and stops at the last `done_at` (database clock, both ends). events/s = events
/ that time. At the end: every delivery done, none dead, none claimed twice, every relay took part,
one inbox row per event, every student's cache floor at their last seq, and a sample of students
received every push once, in seq order.
"""

import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import BenchError, Context, Result, flush_redis, log
from config.processes import wait_for
from realtime.testing import GroupListener

TARGET_ONE_RELAY = 2000.0
SAMPLE_STUDENTS = 50  # whose groups a listener subscribes to (pushes to them are real deliveries)


def run(ctx: Context) -> Result:
    result = Result("drain")
    sizes = [3_000] if ctx.quick else [10_000, 100_000]
    for size in sizes:
        students = min(10_000, max(200, size // 5 if size <= 10_000 else size // 10))
        src = f"bench_drain_{size}"
        ctx.pg.create(src, template=ctx.template)
        log(f"drain: building {size:,} events over {students:,} students")
        spec = {"seed": {"students": students}, "backlog": {"events": size}, "vacuum": True}
        built = ctx.build(src, spec, parallel=1 if ctx.quick else 2)
        log(f"drain: built in {sum(built['timings'].values()):.0f} s ({built['timings']})")
        for relays in (1, 2):
            db = f"{src}_r{relays}"
            ctx.pg.create(db, template=src)
            try:
                run_ = drain_once(ctx, db, events=size, relays=relays)
            finally:
                ctx.pg.drop(db)
            case = f"{size:,} events, {relays} relay{'s' if relays > 1 else ''}"
            target = f">= {TARGET_ONE_RELAY:,.0f}" if relays == 1 else ""
            result.add(
                case,
                "drain rate (all sinks done)",
                run_.rate,
                "events/s",
                target=target,
                met=run_.rate >= TARGET_ONE_RELAY if target else None,
            )
            result.add(case, "realtime sink rate", run_.realtime_rate, "events/s")
            result.add(case, "checks", float(len(run_.problems)), "problems", target="0", met=not run_.problems)
            result.details[case] = run_.as_dict()
        ctx.pg.drop(src)
    return result


@dataclass
class DrainRun:
    events: int
    relays: int
    seconds: float = 0.0
    realtime_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def realtime_rate(self) -> float:
        return self.events / self.realtime_seconds if self.realtime_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "relays": self.relays,
            "seconds": round(self.seconds, 3),
            "realtime_seconds": round(self.realtime_seconds, 3),
            "events_per_second": round(self.rate, 1),
            "problems": self.problems,
            **self.extra,
        }


def drain_once(ctx: Context, db: str, *, events: int, relays: int, timeout: float | None = None) -> DrainRun:
    """Drain the backlog in `db` with `relays` relays and one Celery worker; time it and check it."""
    from django.conf import settings

    timeout = timeout or max(120.0, events / 300)
    run = DrainRun(events=events, relays=relays)
    flush_redis(ctx.redis_url)
    with ctx.pg.connect(db) as conn:
        student_ids = [r[0] for r in conn.execute("SELECT id FROM auth_user ORDER BY id").fetchall()]
    sample = student_ids[:: max(1, len(student_ids) // SAMPLE_STUDENTS)][:SAMPLE_STUDENTS]
    env = ctx.env(db)
    with ctx.procs.scope(), ctx.pg.connect(db) as gate, GroupListener(sample) as listener:
        worker = ctx.procs.worker(f"worker-{db}", env)
        ctx.procs.wait_ready([worker], " ready.", timeout=90)
        with gate.transaction():
            gate.execute("LOCK TABLE outbox_delivery IN EXCLUSIVE MODE")
            procs = [ctx.procs.relay(f"relay{i + 1}-{db}", env) for i in range(relays)]
            wait_for(
                lambda: _waiting_on_lock(ctx, db) >= relays,
                timeout=60,
                what="the relays to block on the gate",
                children=[*procs, worker],
                error=BenchError,
            )
            (released_at,) = gate.execute("SELECT clock_timestamp()").fetchone() or (None,)
        log(f"drain {db}: released {events:,} events to {relays} relay(s)")
        started = time.monotonic()
        with ctx.pg.connect(db) as conn:

            def finished() -> bool:
                row = conn.execute("SELECT count(*) FROM outbox_delivery WHERE status <> 'done'").fetchone()
                return row is not None and row[0] == 0

            try:
                wait_for(
                    finished,
                    timeout=timeout,
                    what=f"{db} to drain",
                    children=[*procs, worker],
                    every=0.2,
                    error=BenchError,
                )
            except BenchError as exc:
                run.problems.append(str(exc).splitlines()[0])
            wall = time.monotonic() - started
            row = conn.execute(
                "SELECT extract(epoch FROM max(done_at) - %(t0)s), "
                "extract(epoch FROM max(done_at) FILTER (WHERE sink = 'realtime') - %(t0)s), "
                "count(*) FILTER (WHERE status = 'dead'), count(*) FILTER (WHERE attempts > 1), "
                "count(DISTINCT claimed_by) FILTER (WHERE claimed_by <> 'history') "
                "FROM outbox_delivery WHERE done_at >= %(t0)s OR status <> 'done'",
                {"t0": released_at},
            ).fetchone()
            assert row is not None
            run.seconds, run.realtime_seconds = float(row[0] or 0), float(row[1] or 0)
            dead, reclaimed, claimers = row[2], row[3], row[4]
            # Deliveries done per 0.5 s after the release, per sink: where a drain stalls, and on what.
            timeline: dict[str, list[int]] = {}
            for sink, slot, n in conn.execute(
                "SELECT sink, floor(extract(epoch FROM done_at - %(t0)s) * 2)::int, count(*) FROM outbox_delivery "
                "WHERE done_at >= %(t0)s GROUP BY 1, 2 ORDER BY 1, 2",
                {"t0": released_at},
            ).fetchall():
                series = timeline.setdefault(sink, [])
                series.extend([0] * (slot + 1 - len(series)))
                series[slot] = n
            run.extra["done_per_half_second"] = timeline
            inbox = conn.execute("SELECT count(*) FROM outbox_inboxentry").fetchone()
            history = conn.execute(
                "SELECT count(*) FROM outbox_outboxevent WHERE correlation_id LIKE %s", ["history:%"]
            )
            expected_inbox = events + (history.fetchone() or (0,))[0]
            floors_expected = dict(conn.execute("SELECT student_id, last_seq FROM outbox_studentstream").fetchall())
        if dead:
            run.problems.append(f"{dead} dead deliveries")
        if reclaimed:  # possible by design (an expired lease), but not in a healthy drain
            run.problems.append(f"{reclaimed} deliveries claimed more than once")
        if claimers != relays:
            run.problems.append(f"{claimers} of {relays} relays claimed deliveries")
        if inbox is None or inbox[0] != expected_inbox:
            run.problems.append(f"inbox rows {inbox[0] if inbox else None} != {expected_inbox}")
        # Cache invalidation: every student's floor is at their last seq.
        run.problems += _check_floors(ctx.redis_url, settings.READ_CACHE_PREFIX, floors_expected)
        # Pushes: the sampled students got all their backlog events, once each, in order.
        order = {sid: i for i, sid in enumerate(student_ids)}
        wants = {}
        for s in sample:
            last = floors_expected.get(s, 0)
            wants[s] = list(range(last - _backlog_len(order[s], events, len(student_ids)) + 1, last + 1))
        try:
            wait_for(
                lambda: all(len(listener.seqs(s)) >= len(wants[s]) for s in sample),
                timeout=10,
                what="pushes",
                error=BenchError,
            )
        except BenchError as exc:
            run.problems.append(str(exc))
        for s in sample:
            got, want = listener.seqs(s), wants[s]
            if got != want:
                run.problems.append(f"student {s}: pushed seqs {got[:5]}... != {want[:5]}... ({len(got)}/{len(want)})")
                break
        run.extra.update(wall_seconds=round(wall, 2), reclaimed=reclaimed, relays_that_claimed=claimers)
    log(
        f"drain {db}: {run.rate:,.0f} events/s all sinks, {run.realtime_rate:,.0f} events/s realtime"
        f"{'; PROBLEMS: ' + '; '.join(run.problems) if run.problems else ''}"
    )
    return run


def _backlog_len(index: int, events: int, students: int) -> int:
    """How many backlog events the index-th student has (round-robin: the first `events % students`
    get one more)."""
    return events // students + (1 if index < events % students else 0)


def _waiting_on_lock(ctx: Context, db: str) -> int:
    row = ctx.pg.scalar(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
        [ctx.pg.physical(db)],
    )
    return int(row or 0)


def _check_floors(redis_url: str, prefix: str, expected: dict[int, int]) -> list[str]:
    import redis

    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    ids = sorted(expected)
    for sid in ids:
        pipe.hget(f"{prefix}:student:{sid}", "floor")
    wrong = [(sid, f) for sid, f in zip(ids, pipe.execute(), strict=True) if f is None or int(f) != expected[sid]]
    if wrong:
        return [f"{len(wrong)} students' cache floor not at their last seq (e.g. {wrong[:3]})"]
    return []
