"""1. Webhook throughput and latency: the real webhook (outbox) against the naive on_commit(task.delay).

Two web servers as the Procfile runs them (gunicorn, `config.wsgi`, benchmark settings), each on its own
copy of one seeded database: the outbox one runs the product's webhook, the naive one `benchmarks.naive` on a database
without the event guard triggers. 32 keep-alive clients post signed, distinct `payment.succeeded`
events in a closed loop (each sends its next request when the last one answered), over 1,000 students
(200 in --quick). The two paths take turns, a few rounds each, so machine noise hits both alike.

Only the request path is measured: no relay and no Celery worker run meanwhile (the outbox backlog and
the naive task queue just accumulate), so both sides get the same CPU.
"""

import asyncio
import time
from typing import Any

from benchmarks.harness import NAIVE_WEBHOOK_PATH, Context, Result, flush_redis, log, percentile
from benchmarks.loadgen import closed_loop, webhook_request

OUTBOX_PATH = "/api/v1/payments/webhook"
NAIVE_PATH = f"/{NAIVE_WEBHOOK_PATH}"
CLIENTS = 32
TARGET_RATIO = 0.8


def run(ctx: Context) -> Result:
    result = Result("webhook")
    students = 200 if ctx.quick else 1000
    rounds = 1 if ctx.quick else 3
    seconds = 3.0 if ctx.quick else 10.0
    seed_db, outbox_db, naive_db = "bench_webhook_seed", "bench_webhook_outbox", "bench_webhook_naive"
    ctx.pg.create(seed_db, template=ctx.template)
    seeded = ctx.build(seed_db, {"seed": {"students": students, "trainers": 5}, "vacuum": True})
    ctx.pg.create(outbox_db, template=seed_db)
    ctx.pg.create(naive_db, template=seed_db)
    ctx.pg.drop(seed_db)
    ctx.pg.disable_event_guards(naive_db)  # the naive system has no guard
    flush_redis(ctx.redis_url)  # the naive tasks pile up in the broker's queue: start empty
    student_ids = [s[0] for s in seeded["students"]]
    course_id = seeded["course_id"]
    cases: dict[str, dict[str, Any]] = {}
    worker_counts = [1, 2]
    try:
        for workers in worker_counts:
            with ctx.procs.scope():
                servers = {
                    "outbox": ctx.procs.web(f"web-outbox-w{workers}", ctx.env(outbox_db), workers=workers)[1],
                    "naive": ctx.procs.web(f"web-naive-w{workers}", ctx.env(naive_db), workers=workers)[1],
                }
                paths = {"outbox": OUTBOX_PATH, "naive": NAIVE_PATH}
                for path_name, port in servers.items():  # warm up: connections, pools, code paths
                    asyncio.run(_load(port, paths[path_name], f"warm{workers}-{path_name}", student_ids, course_id, 2))
                for r in range(rounds if workers == 1 else 1):
                    for path_name, port in servers.items():
                        tag = f"w{workers}-{path_name}-{r}"
                        load = asyncio.run(_load(port, paths[path_name], tag, student_ids, course_id, seconds))
                        case = cases.setdefault(f"{path_name}, {workers} web process{'es' if workers > 1 else ''}", {})
                        case.setdefault("latencies", []).extend(load.latencies)
                        case["elapsed"] = case.get("elapsed", 0.0) + load.elapsed
                        case["ok"] = case.get("ok", 0) + load.ok
                        for k, v in load.errors.items():
                            case.setdefault("errors", {})[k] = case.setdefault("errors", {}).get(k, 0) + v
                        case.setdefault("rounds_rps", []).append(round(load.ok / load.elapsed, 1))
                        log(f"webhook {tag}: {load.ok / load.elapsed:.0f} req/s, {load.errors or 'no errors'}")
    finally:
        ctx.pg.drop(outbox_db)
        ctx.pg.drop(naive_db)

    rps: dict[str, float] = {}
    for name, case in cases.items():
        rps[name] = case["ok"] / case["elapsed"]
        lat = case["latencies"]
        errors = sum(case.get("errors", {}).values())
        result.add(name, "throughput", rps[name], "req/s")
        result.add(name, "latency p50", percentile(lat, 50) * 1000, "ms")
        result.add(name, "latency p99", percentile(lat, 99) * 1000, "ms")
        result.add(name, "errors", errors, "req", target="0", met=errors == 0)
        result.details[name] = {
            "requests": case["ok"],
            "errors": case.get("errors", {}),
            "rounds_rps": case["rounds_rps"],
            "latency_max_ms": max(lat) * 1000 if lat else None,
        }
    for workers in worker_counts:
        suffix = f", {workers} web process{'es' if workers > 1 else ''}"
        outbox, naive = rps.get(f"outbox{suffix}"), rps.get(f"naive{suffix}")
        if outbox and naive:
            ratio = outbox / naive
            target = f">= {TARGET_RATIO}" if workers == 1 else ""
            result.add(
                f"outbox / naive{suffix}",
                "ratio",
                ratio,
                "x",
                target=target,
                met=ratio >= TARGET_RATIO if target else None,
            )
    result.details.update(clients=CLIENTS, students=students, rounds=rounds, seconds_per_round=seconds)
    return result


async def _load(port: int, path: str, tag: str, student_ids: list[int], course_id: int, seconds: float) -> Any:
    # Enough distinct, freshly signed requests for any plausible rate (they are signed for 300 s).
    count = int(seconds * 3000) + 200
    nonce = time.time_ns()
    requests = [
        webhook_request(
            payment_id=f"{tag}-{nonce}-{i}", student_id=student_ids[i % len(student_ids)], course_id=course_id
        )
        for i in range(count)
    ]
    return await closed_loop(port=port, path=path, requests=requests, clients=CLIENTS, duration=seconds)
