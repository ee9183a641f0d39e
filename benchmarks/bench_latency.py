"""3. The whole chain: from the webhook's COMMIT to each of its frames at the student's socket, its CPU
per purchase, and the highest rate at which the chains keep up; ours against the naive chain.

Each case runs on a fresh copy of one seeded database (200 students, 10 trainers), with 200 WebSocket
clients (`websockets`, one per student) and webhooks sent open loop, round-robin over the students.
The processes are the Procfile's, sized as the README tells an operator: `web` (gunicorn, `config.wsgi`,
`config/gunicorn.conf.py`'s processes and threads), `ws` (uvicorn), and a Celery worker with Celery's
default concurrency (one process per core).

- `outbox`: the product. One relay; the worker runs the real handlers.
- `naive`: the same domain work chained with `transaction.on_commit(task.delay)` and no outbox
  (`benchmarks.naive`, `benchmarks.naive_chain`, `benchmarks.naive_ws`), on a database without the
  event guard triggers. No relay.
- `one` (only when asked for, BENCH_LATENCY_CASES): the product on the earlier layout, one uvicorn
  process serving the webhooks and the sockets. No ramp.

Each case: 2 s of warm-up, the ramp (`benchmarks.ramp`: 15 s steps from 25/s, up by sqrt(2) while the
chains keep up, down while they don't, then one step between, at most 7; one 4 s step in --quick), then
`RATE` purchases/s for 60 s (6 s in --quick) with the CPU measured from the first webhook until every
chain is done. Latency = the frame's arrival minus the server's clock when the webhook's COMMIT returned
(`X-Bench-Committed-At`; see `benchmarks.middleware`); the outbox case also shows the earlier rounds'
split of `purchase.created` (commit -> relay pushed -> frame) and bounds. Its per-purchase figures go
to `latency-<case>.csv` beside the logs.

Knobs (environment): BENCH_LATENCY_RATE (50), BENCH_LATENCY_CASES (e.g. `outbox,naive`),
BENCH_LATENCY_RAMP=0 (no ramp: for profiling the fixed rate alone).
"""

import asyncio
import os
from collections.abc import Callable
from typing import Any

from benchmarks import autovacuum, ramp
from benchmarks.chain import CHAIN, ChainClient, Step
from benchmarks.harness import NAIVE_WEBHOOK_PATH, NAIVE_WS_PATH, Context, CpuUsage, Result, flush_redis, log
from benchmarks.latency_report import report_case, report_comparison

RATE = float(os.environ.get("BENCH_LATENCY_RATE", "50"))
RAMP_START = 25.0  # low, so that the ramp goes up and at most its last steps fall behind
CLIENTS = 200
OUTBOX, NAIVE, ONE = "outbox", "naive", "one"
CASES = {
    OUTBOX: "outbox chain (Procfile: web + ws + relay + worker)",
    NAIVE: "naive chain (on_commit(task.delay): web + ws + worker)",
    ONE: "outbox chain, 1 ASGI process for webhooks + sockets",
}
PRODUCT_WEBHOOK, PRODUCT_WS = "/api/v1/payments/webhook", "ws/events/"


def run(ctx: Context) -> Result:
    result = Result("latency")
    seconds = 6.0 if ctx.quick else 60.0
    wanted = os.environ.get("BENCH_LATENCY_CASES", "")
    cases = wanted.split(",") if wanted else [OUTBOX, NAIVE]
    unknown = set(cases) - set(CASES)
    if unknown:
        raise ValueError(f"BENCH_LATENCY_CASES: unknown {sorted(unknown)}; known: {', '.join(CASES)}")
    src = "bench_latency"
    ctx.pg.create(src, template=ctx.template)
    seeded = ctx.build(src, {"seed": {"students": CLIENTS, "trainers": 10}, "vacuum": True})
    measured: dict[str, tuple[Step, ramp.RampResult | None]] = {}
    try:
        for case in cases:
            measured[case] = _one_case(ctx, result, src, seeded, seconds, case=case)
    finally:
        ctx.pg.drop(src)
    if OUTBOX in measured and NAIVE in measured:
        report_comparison(result, measured[OUTBOX], measured[NAIVE], names=(CASES[OUTBOX], CASES[NAIVE]))
    result.details.update(rate=RATE, seconds_per_case=seconds, clients=CLIENTS, chain=list(CHAIN))
    return result


def _one_case(
    ctx: Context, result: Result, src: str, seeded: dict[str, Any], seconds: float, *, case: str
) -> tuple[Step, ramp.RampResult | None]:
    db = f"{src}_{case}"
    ctx.pg.create(db, template=src)
    if case == NAIVE:
        ctx.pg.disable_event_guards(db)
    flush_redis(ctx.redis_url)
    env = ctx.env(db, BENCH_COMMIT_STAMP="1")
    tag = f"-latency-{case}"
    try:
        with autovacuum.standing_in(ctx.pg.url(db)), ctx.procs.scope():
            ws_path, webhook = (
                (NAIVE_WS_PATH, f"/{NAIVE_WEBHOOK_PATH}") if case == NAIVE else (PRODUCT_WS, PRODUCT_WEBHOOK)
            )
            if case == ONE:
                ws_port = http_port = ctx.procs.ws(f"asgi{tag}", env)[1]
            else:
                start_ws = ctx.procs.naive_ws if case == NAIVE else ctx.procs.ws
                ws_port = start_ws(f"ws{tag}", env)[1]
                http_port = ctx.procs.web(f"web{tag}", env)[1]
            worker = ctx.procs.worker(f"worker{tag}", env, concurrency=None)
            ctx.procs.wait_ready([worker], " ready.", timeout=90)
            if case != NAIVE:
                ctx.procs.wait_ready([ctx.procs.relay(f"relay{tag}", env)], " started", timeout=60)
            procs = [p for p in ctx.procs.procs if not p.name.startswith("pyspy-")]
            with ctx.pg.connect(db) as watcher:

                def backends() -> dict[int, str]:
                    rows = watcher.execute(
                        "SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()"
                    ).fetchall()
                    return dict(rows)

                def settled() -> bool:  # the outbox has no open delivery (the naive chain has no outbox)
                    if case == NAIVE:
                        return True
                    return (
                        watcher.execute("SELECT 1 FROM outbox_delivery WHERE status <> 'done' LIMIT 1").fetchone()
                        is None
                    )

                client = ChainClient(
                    http_port=http_port,
                    ws_port=ws_port,
                    ws_path=ws_path,
                    webhook_path=webhook,
                    students=seeded["students"],
                    course_id=seeded["course_id"],
                )
                base, ramped = asyncio.run(
                    _measure(
                        client, ctx.quick, seconds, settled, lambda: CpuUsage(procs, backends), with_ramp=case != ONE
                    )
                )
            settled_at = _relay_settled(ctx, db) if case != NAIVE else {}
            # The naive chain reuses the services with emit() replaced: check that it really wrote no event.
            events = int(ctx.pg.scalar(db, "SELECT count(*) FROM outbox_outboxevent"))
    finally:
        ctx.pg.drop(db)
    report_case(result, CASES[case], base, ramped, tag=tag, settled=settled_at, primary=case == OUTBOX)
    if case == NAIVE:
        at = f"{CASES[case]}, {base.rate:g}/s"
        result.add(at, "outbox events written (none expected)", float(events), "events", target="0", met=events == 0)
    if case != NAIVE:
        _write_timeline(ctx.procs.log_dir / f"latency-{case}.csv", base, settled_at)
    return base, ramped


async def _measure(
    client: ChainClient,
    quick: bool,
    seconds: float,
    settled: Callable[[], bool],
    usage: Callable[[], CpuUsage],
    *,
    with_ramp: bool,
) -> tuple[Step, ramp.RampResult | None]:
    """Warm-up, the ramp (if any), then the fixed rate: last, so that its backlog, however long, delays
    nothing else."""
    step_seconds, max_steps = (4.0, 1) if quick else (15.0, 7)
    async with client:
        await client.step(rate=RATE, seconds=2.0, tag="warm", tail_timeout=30, settled=settled)
        ramped = None
        if with_ramp and os.environ.get("BENCH_LATENCY_RAMP") != "0":

            async def at(rate: float) -> Step:
                step = await client.step(
                    rate=rate,
                    seconds=step_seconds,
                    tag=f"ramp{rate:g}",
                    tail_timeout=30,
                    settled=settled,
                    usage=usage(),
                )
                log(f"latency ramp: {rate:g}/s: {ramp.judge(step).why}")
                return step

            async def ready() -> bool:
                return await client.wait_done(settled, timeout=120)

            await ready()  # the warm-up's chains
            ramped = await ramp.search(at, ready, start=RAMP_START, max_steps=max_steps, refine=not quick)
        if not await client.wait_done(settled, timeout=120):
            log("latency: the earlier chains are not done after 120 s; measuring anyway")
        log(f"latency: {RATE:g}/s for {seconds:g} s")
        base = await client.step(
            rate=RATE, seconds=seconds, tag="base", tail_timeout=120, settled=settled, usage=usage()
        )
        log(f"latency: {RATE:g}/s: {ramp.judge(base).why}")
        return base, ramped


def _relay_settled(ctx: Context, db: str) -> dict[int, float]:
    """When the relay settled each purchase.created push (it pushes, then settles), by purchase, on the
    database clock (the same machine clock as the stamps)."""
    with ctx.pg.connect(db) as conn:
        rows = conn.execute(
            "SELECT (e.payload->>'purchase_id')::int, extract(epoch FROM d.done_at)::float8 "
            "FROM outbox_delivery d JOIN outbox_outboxevent e ON e.id = d.event_id "
            "WHERE d.sink = 'realtime' AND d.status = 'done' AND e.type = %s",
            [CHAIN[0]],
        ).fetchall()
    return dict(rows)


def _write_timeline(path: Any, step: Step, settled: dict[int, float]) -> None:
    """Each purchase's COMMIT and latencies, in commit order: when the slow ones happened (all at once,
    or spread out) says more about their cause than the percentiles do."""
    nan = float("nan")
    with open(path, "w") as f:
        f.write("purchase_id,commit_sent_at,commit_ms,commit_to_relay_pushed_ms,")
        f.write(",".join(f"commit_to_{t.replace('.', '_')}_ms" for t in CHAIN) + "\n")
        for purchase_id, (sent, returned) in sorted(step.commits.items(), key=lambda item: item[1][0]):
            pushed = (settled[purchase_id] - returned) * 1000 if purchase_id in settled else nan
            frames = [step.frames[t].get(purchase_id) for t in CHAIN]
            lat = [(at - returned) * 1000 if at is not None else nan for at in frames]
            f.write(f"{purchase_id},{sent:.6f},{(returned - sent) * 1000:.2f},{pushed:.2f},")
            f.write(",".join(f"{v:.2f}" for v in lat) + "\n")
