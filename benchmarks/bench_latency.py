"""3. Commit-to-socket latency at a steady 50 purchases/s with 200 connected WebSocket clients.

The real stack on a fresh database, as the Procfile runs it: `web` (gunicorn, `config.wsgi`, its
configured processes and threads) takes the webhooks, `ws` (uvicorn, `config.asgi`) holds the sockets,
one relay, one Celery worker (prefork, 2 processes) running the real handlers (allocation, sessions).
200 students with one WebSocket each (the `websockets` library, `ws://127.0.0.1:<port>/ws/events/
?token=<key>`, live only). Webhooks go out open-loop at 50/s (each at its scheduled time, whatever the
previous ones are doing), round-robin over the 200 students, for 60 s (6 s in --quick), after 2 s of
warm-up. For contrast, the same load on the earlier layout: one uvicorn process serving both the
webhooks and the sockets.

Commit time: the server runs with BENCH_COMMIT_STAMP=1, so each webhook response carries the server's
clock when the transaction that wrote `purchase.created` sent its COMMIT (`X-Bench-Commit-Sent-At`)
and when that COMMIT returned (`X-Bench-Committed-At`, read in the committing thread right after).
PostgreSQL makes a transaction visible to other sessions once its commit record is on disk, as its
COMMIT returns: latency = the client's clock when the `purchase.created` frame arrives minus the second
stamp (same machine, same clock). A busy web process can read that stamp a little late, which would
understate; so the latency from COMMIT sent, which adds the COMMIT's own disk flush, is shown beside it
as a bound from the other side, and from the event's `occurred_at` (taken before its INSERT, so also
the rest of the transaction) as a looser one. Each purchase's stamps and latencies go to
`latency-<layout>.csv` beside the logs.

Where the CPU goes during the run is read from /proc: each process (group), the PostgreSQL backends
serving each (by application_name), the load generator and the whole machine.
"""

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from benchmarks.harness import Context, CpuUsage, Result, flush_redis, log, percentile
from benchmarks.loadgen import HttpConnection, webhook_request
from benchmarks.middleware import COMMIT_SENT_HEADER, COMMITTED_HEADER

RATE = float(os.environ.get("BENCH_LATENCY_RATE", "50"))  # the figure; other rates for exploring
CLIENTS = 200
TARGET_P99_MS = 50.0
WEBHOOK = "/api/v1/payments/webhook"
PRODUCT, ONE_PROCESS = "product", "one"
CASES = {
    PRODUCT: "web + ws processes (the Procfile)",
    ONE_PROCESS: "1 ASGI process (webhooks + sockets)",
}


def run(ctx: Context) -> Result:
    result = Result("latency")
    seconds = 6.0 if ctx.quick else 60.0
    src = "bench_latency"
    ctx.pg.create(src, template=ctx.template)
    seeded = ctx.build(src, {"seed": {"students": CLIENTS, "trainers": 10}, "vacuum": True})
    try:
        for layout in (PRODUCT, ONE_PROCESS):
            _one_case(ctx, result, src, seeded, seconds, layout=layout)
    finally:
        ctx.pg.drop(src)
    result.details["seconds_per_case"] = seconds
    return result


def _one_case(ctx: Context, result: Result, src: str, seeded: dict[str, Any], seconds: float, *, layout: str) -> None:
    """One run on a fresh copy of the seeded database, in one of the two layouts."""
    db = f"{src}_{layout}"
    ctx.pg.create(db, template=src)
    flush_redis(ctx.redis_url)
    env = ctx.env(db, BENCH_COMMIT_STAMP="1")
    tag = f"-latency-{layout}"
    try:
        with ctx.procs.scope():
            if layout == PRODUCT:
                ws_port = ctx.procs.ws(f"ws{tag}", env)[1]
                http_port = ctx.procs.web(f"web{tag}", env)[1]
            else:
                ws_port = http_port = ctx.procs.ws(f"asgi{tag}", env)[1]
            worker = ctx.procs.worker(f"worker{tag}", env)
            relay = ctx.procs.relay(f"relay{tag}", env)
            ctx.procs.wait_ready([worker], " ready.", timeout=90)
            ctx.procs.wait_ready([relay], " started", timeout=60)
            with ctx.pg.connect(db) as watcher:
                usage = CpuUsage(
                    [p for p in ctx.procs.procs if not p.name.startswith("pyspy-")],
                    lambda: dict(
                        watcher.execute(
                            "SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()"
                        ).fetchall()
                    ),
                )

                def chains_done() -> bool:
                    open_ = watcher.execute("SELECT 1 FROM outbox_delivery WHERE status <> 'done' LIMIT 1")
                    return open_.fetchone() is None

                run_ = asyncio.run(
                    _measure(ws_port, http_port, seeded["students"], seeded["course_id"], seconds, usage, chains_done)
                )
        # Where the time goes: when the relay settled each purchase.created push (it pushes, then
        # settles), on the database clock (the same machine clock as the stamps).
        with ctx.pg.connect(db) as conn:
            settled = dict(
                conn.execute(
                    "SELECT e.payload->>'payment_id', extract(epoch FROM d.done_at)::float8 "
                    "FROM outbox_delivery d JOIN outbox_outboxevent e ON e.id = d.event_id "
                    "WHERE d.sink = 'realtime' AND d.status = 'done' AND e.type = 'purchase.created'"
                ).fetchall()
            )
    finally:
        ctx.pg.drop(db)
    measured = run_["measured"]  # payment id -> (COMMIT sent, COMMIT returned, frame arrival)
    _write_timeline(ctx.procs.log_dir / f"latency-{layout}.csv", measured, settled)
    pairs = {i: (returned, frame) for i, (_, returned, frame) in measured.items()}
    lat = [(frame - stamp) * 1000 for stamp, frame in pairs.values()]
    from_sent = [(frame - sent) * 1000 for sent, _, frame in measured.values()]
    commit_ms = [(returned - sent) * 1000 for sent, returned, _ in measured.values()]
    upper = run_["from_created_ms"]
    to_relay = [(settled[i] - stamp) * 1000 for i, (stamp, _) in pairs.items() if i in settled]
    to_socket = [(frame - settled[i]) * 1000 for i, (_, frame) in pairs.items() if i in settled]
    p99 = percentile(lat, 99)
    case = CASES[layout]
    result.add(case, "commit->frame p50", percentile(lat, 50), "ms")
    target = f"<= {TARGET_P99_MS:.0f}" if layout == PRODUCT else ""
    result.add(case, "commit->frame p99", p99, "ms", target=target, met=p99 <= TARGET_P99_MS if target else None)
    result.add(case, "commit->frame max", max(lat) if lat else float("nan"), "ms")
    result.add(case, "  of which commit->relay pushed p99", percentile(to_relay, 99), "ms")
    result.add(case, "  of which pushed->frame p99", percentile(to_socket, 99), "ms")
    result.add(case, "COMMIT sent->frame p99 (with the COMMIT's flush)", percentile(from_sent, 99), "ms")
    result.add(case, "  the COMMIT itself p99", percentile(commit_ms, 99), "ms")
    result.add(case, "  the COMMIT itself max", max(commit_ms) if commit_ms else float("nan"), "ms")
    result.add(case, "created_at->frame p99 (upper bound)", percentile(upper, 99), "ms")
    result.add(case, "webhook response p99", percentile(run_["response_ms"], 99), "ms")
    failed = sum(run_["errors"].values())
    result.add(case, "webhooks failed (5xx, timeouts)", float(failed), "requests", target="0", met=failed == 0)
    missing = run_["accepted"] - len(lat)  # accepted webhooks whose purchase.created never arrived
    result.add(case, "frames missing", float(missing), "frames", target="0", met=missing == 0)
    result.add(case, "achieved rate", run_["sent"] / run_["send_seconds"], "purchases/s")
    # CPU from the first webhook of the run until every chain it started was done, per purchase.
    used = usage.used()
    per_purchase = {name.replace(tag, ""): seconds_ * 1000 / run_["sent"] for name, seconds_ in used.items()}
    result.add(case, "CPU per purchase, whole machine", per_purchase["machine"], "ms")
    for name, value in per_purchase.items():
        if name != "machine":
            result.add(case, f"  in {name}", value, "ms")
    machine_cores = used["machine"] / max(usage.seconds(), 1e-9)
    result.add(case, "machine busy (sending to all done)", machine_cores, f"of {os.cpu_count()} cores")
    # How far the handler chains lagged: seconds from the last webhook until every delivery was done.
    done_note = "" if run_["chains_done"] else " (not all: gave up)"
    result.add(case, f"chains all done after the last webhook{done_note}", run_["chains_done_after_s"], "s")
    result.details[case] = {
        "sent": run_["sent"],
        "frames": len(lat),
        "errors": run_["errors"],
        "late_sends": run_["late_sends"],
        "commit_to_frame_ms": _summary(lat),
        "commit_to_relay_pushed_ms": _summary(to_relay),
        "relay_pushed_to_frame_ms": _summary(to_socket),
        "commit_sent_to_frame_ms": _summary(from_sent),
        "commit_itself_ms": _summary(commit_ms),
        "created_to_frame_ms": _summary(upper),
        "webhook_response_ms": _summary(run_["response_ms"]),
        "cpu_ms_per_purchase": {k: round(v, 3) for k, v in per_purchase.items()},
        "cpu_window_seconds": round(usage.seconds(), 2),
    }


def _write_timeline(path: Any, measured: dict[str, tuple[float, float, float]], settled: dict[str, float]) -> None:
    """Each purchase's COMMIT and latencies, in commit order: when the slow ones happened (all at once,
    or spread out) says more about their cause than the percentiles do."""
    with open(path, "w") as f:
        f.write("payment_id,commit_sent_at,commit_ms,commit_to_frame_ms,commit_to_relay_pushed_ms\n")
        for payment_id, (sent, returned, frame) in sorted(measured.items(), key=lambda item: item[1][0]):
            pushed = (settled[payment_id] - returned) * 1000 if payment_id in settled else float("nan")
            commit, latency = (returned - sent) * 1000, (frame - returned) * 1000
            f.write(f"{payment_id},{sent:.6f},{commit:.2f},{latency:.2f},{pushed:.2f}\n")


async def _until(predicate: Callable[[], bool], *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _summary(values: list[float]) -> dict[str, float | int]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2) if values else float("nan"),
    }


async def _measure(
    ws_port: int,
    http_port: int,
    students: list[list[Any]],
    course_id: int,
    seconds: float,
    usage: CpuUsage,
    settled: Callable[[], bool],
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    frames: dict[str, tuple[float, float]] = {}  # payment id -> (arrival, occurred_at)
    sockets: list[Any] = []
    readers: list[asyncio.Task[None]] = []

    async def read(ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                arrived = time.time()
                message = json.loads(raw)
                if message.get("type") == "purchase.created":
                    occurred = datetime.fromisoformat(message["occurred_at"]).timestamp()
                    frames[message["data"]["payment_id"]] = (arrived, occurred)

    gate = asyncio.Semaphore(20)

    async def open_socket(token: str) -> None:
        async with gate:
            ws = await connect(f"ws://127.0.0.1:{ws_port}/ws/events/?token={token}", open_timeout=30, max_queue=None)
            sockets.append(ws)
            readers.append(asyncio.create_task(read(ws)))

    await asyncio.gather(*(open_socket(token) for _, token in students))
    await asyncio.sleep(1.0)  # consumers have joined their groups
    pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(16):
        pool.put_nowait(HttpConnection(http_port))
    commits: dict[str, tuple[float, float]] = {}  # payment id -> when its COMMIT was sent, returned
    response_ms: list[float] = []
    errors: dict[str, int] = {}

    async def send(payment_id: str, student_id: int) -> None:
        body, headers = webhook_request(payment_id=payment_id, student_id=student_id, course_id=course_id)
        conn = await pool.get()
        started = time.perf_counter()
        try:
            response = await asyncio.wait_for(conn.post(WEBHOOK, body, headers), timeout=30)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            await conn.close()
            return
        finally:
            pool.put_nowait(conn)
        if response.status != 200:
            errors[f"HTTP {response.status}"] = errors.get(f"HTTP {response.status}", 0) + 1
            return
        response_ms.append((time.perf_counter() - started) * 1000)
        headers = response.headers
        commits[payment_id] = (float(headers[COMMIT_SENT_HEADER.lower()]), float(headers[COMMITTED_HEADER.lower()]))

    async def schedule(tag: str, count: int) -> tuple[list[str], float, int]:
        tasks, ids, late = [], [], 0
        start = time.perf_counter()
        for i in range(count):
            due = start + i / RATE
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                late += 1
            payment_id = f"lat-{tag}-{i}"
            ids.append(payment_id)
            tasks.append(asyncio.create_task(send(payment_id, students[i % len(students)][0])))
        await asyncio.gather(*tasks)
        return ids, time.perf_counter() - start, late

    nonce = time.time_ns()
    await schedule(f"warm-{nonce}", int(2 * RATE))
    log(f"latency: warmed up; sending {RATE:.0f}/s for {seconds:.0f} s")
    await _until(settled, timeout=30)  # the warm-up's chains are done: they are not counted
    usage.start()
    ids, send_seconds, late = await schedule(f"run-{nonce}", int(seconds * RATE))
    sent_all = time.monotonic()
    await _until(lambda: all(i in frames for i in ids if i in commits), timeout=15)
    # Every chain (allocation, sessions, their pushes) is done: how far the handlers lagged behind.
    chains_done = await _until(settled, timeout=120)
    tail = time.monotonic() - sent_all
    usage.stop()
    for ws in sockets:
        with contextlib.suppress(Exception):
            await ws.close()
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for conn in [pool.get_nowait() for _ in range(pool.qsize())]:
        await conn.close()
    measured = [i for i in ids if i in commits and i in frames]
    return {
        "sent": len(ids),
        "send_seconds": send_seconds,
        "chains_done": chains_done,
        "chains_done_after_s": tail,
        "late_sends": late,
        "errors": errors,
        "response_ms": response_ms,
        "measured": {i: (*commits[i], frames[i][0]) for i in measured},
        "accepted": sum(1 for i in ids if i in commits),
        "from_created_ms": [(frames[i][0] - frames[i][1]) * 1000 for i in measured],
    }
