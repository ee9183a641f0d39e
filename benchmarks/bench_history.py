"""4. Cost that does not grow with history: drain rate with 1,000,000 delivered events retained,
against an empty table.

Two databases with the same backlog (20,000 `bench.ping` events through `emit`, over 4,000 students,
as in the drain benchmark): one with nothing else, one that first got 1,000,000 delivered events
(250 per student, seqs before the backlog's) with both their deliveries `done` and their inbox rows,
bulk-inserted with generate_series. Both are VACUUM ANALYZEd (as autovacuum would have them), then
each is drained by one relay and one Celery worker on a fresh copy, in turns (three rounds, ABA/BAB
order; the median of each counts). --quick: 100,000 retained, a 3,000-event backlog, one round.
"""

import statistics
from typing import Any

from benchmarks.bench_drain import drain_once
from benchmarks.harness import Context, Result, log

TARGET_RATIO = 0.9


def run(ctx: Context) -> Result:
    result = Result("history")
    history = 100_000 if ctx.quick else 1_000_000
    backlog = 3_000 if ctx.quick else 20_000
    students = 600 if ctx.quick else 4_000
    rounds = 1 if ctx.quick else 3
    sources = {"empty": "bench_history_empty", "history": "bench_history_full"}
    ctx.pg.create(sources["empty"], template=ctx.template)
    ctx.pg.create(sources["history"], template=ctx.template)
    seed: dict[str, Any] = {"seed": {"students": students}, "backlog": {"events": backlog}, "vacuum": True}
    parallel = 1 if ctx.quick else 2
    built = ctx.build(sources["empty"], seed, parallel=parallel)
    log(f"history: empty variant built in {sum(built['timings'].values()):.0f} s")
    built = ctx.build(sources["history"], {**seed, "history": {"events": history}}, timeout=1200, parallel=parallel)
    log(f"history: {history:,} retained events built in {sum(built['timings'].values()):.0f} s {built['timings']}")
    sizes = {
        name: ctx.pg.scalar("postgres", "SELECT pg_size_pretty(pg_database_size(%s))", [ctx.pg.physical(db)])
        for name, db in sources.items()
    }
    rates: dict[str, list[float]] = {"empty": [], "history": []}
    problems: list[str] = []
    try:
        for r in range(rounds):
            # ABBA...: each variant goes first as often as second, so drift in the machine's load
            # does not favour one.
            for name, src in sorted(sources.items(), reverse=r % 2 == 1):
                db = f"{src}_r{r}"
                ctx.pg.create(db, template=src, file_copy=True)
                try:
                    drained = drain_once(ctx, db, events=backlog, relays=1)
                finally:
                    ctx.pg.drop(db)
                rates[name].append(drained.rate)
                problems += [f"{name}: {p}" for p in drained.problems]
    finally:
        for src in sources.values():
            ctx.pg.drop(src)
    empty, full = statistics.median(rates["empty"]), statistics.median(rates["history"])
    ratio = full / empty if empty else 0.0
    result.add("empty table", f"drain rate, median of {rounds}", empty, "events/s")
    result.add(f"{history:,} delivered events retained", f"drain rate, median of {rounds}", full, "events/s")
    result.add("retained / empty", "ratio", ratio, "x", target=f">= {TARGET_RATIO}", met=ratio >= TARGET_RATIO)
    result.add("both", "checks", float(len(problems)), "problems", target="0", met=not problems)
    result.details.update(
        history=history,
        backlog=backlog,
        students=students,
        rounds=rounds,
        rates=rates,
        database_sizes=sizes,
        problems=problems,
    )
    return result
