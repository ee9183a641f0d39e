"""The latency benchmark's client: students on WebSockets and an open-loop webhook sender, measuring
each purchase's chain from the webhook's COMMIT to each of its frames at the student's socket.

A purchase's chain is `CHAIN`: `purchase.created` (the webhook's event), `trainer.allocated` (the
allocation handler's), `sessions.generated` (the sessions handler's). Every frame carries
`data.purchase_id`, and every webhook response names its purchase, so each frame is matched to its
webhook's COMMIT stamps (`benchmarks.middleware`). Both the product's socket and the naive chain's
(`benchmarks.naive_ws`) send frames of that shape. Traffic goes to 127.0.0.1 only.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from benchmarks.harness import CpuUsage, percentile
from benchmarks.loadgen import HttpConnection, webhook_request
from benchmarks.middleware import COMMIT_SENT_HEADER, COMMITTED_HEADER

CHAIN = ("purchase.created", "trainer.allocated", "sessions.generated")
LAST = CHAIN[-1]
CONNECTIONS = 16  # keep-alive webhook connections; a request waits for a free one (open loop otherwise)


@dataclass
class Step:
    """One stretch of webhooks at one rate, and what became of each purchase's chain."""

    rate: float
    seconds: float
    sent: int = 0
    send_seconds: float = 0.0  # first send to last response
    late_sends: int = 0  # sent more than 50 ms after their time (the load generator fell behind)
    errors: dict[str, int] = field(default_factory=dict)
    response_ms: list[float] = field(default_factory=list)
    commits: dict[int, tuple[float, float]] = field(default_factory=dict)  # purchase -> COMMIT sent, returned
    frames: dict[str, dict[int, float]] = field(default_factory=dict)  # type -> purchase -> arrival
    occurred: dict[int, float] = field(default_factory=dict)  # purchase -> purchase.created's occurred_at
    chains_done: bool = False
    chains_done_after_s: float = float("nan")  # last webhook answered -> every chain done
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process (CpuUsage.used())
    cpu_seconds: float = 0.0  # wall-clock seconds the CPU was measured over

    def latencies_ms(self, event_type: str) -> list[float]:
        """COMMIT returned -> frame arrival, per purchase whose frame arrived."""
        frames = self.frames.get(event_type, {})
        return [(frames[p] - returned) * 1000 for p, (_, returned) in self.commits.items() if p in frames]

    def missing(self, event_type: str) -> int:
        frames = self.frames.get(event_type, {})
        return sum(1 for p in self.commits if p not in frames)

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def cpu_ms_per_purchase(self) -> dict[str, float]:
        return {name: seconds * 1000 / max(self.sent, 1) for name, seconds in self.cpu.items()}

    def summary(self, event_type: str) -> dict[str, float | int]:
        values = self.latencies_ms(event_type)
        return {
            "n": len(values),
            "p50": round(percentile(values, 50), 2),
            "p99": round(percentile(values, 99), 2),
            "max": round(max(values), 2) if values else float("nan"),
            "missing": self.missing(event_type),
        }


class ChainClient:
    """Sockets for every student (open for the client's lifetime) and the webhook sender."""

    def __init__(
        self,
        *,
        http_port: int,
        ws_port: int,
        ws_path: str,
        webhook_path: str,
        students: list[list[Any]],
        course_id: int,
    ) -> None:
        self.http_port, self.ws_port, self.ws_path, self.webhook_path = http_port, ws_port, ws_path, webhook_path
        self.students, self.course_id = students, course_id
        self.frames: dict[str, dict[int, float]] = {t: {} for t in CHAIN}
        self.occurred: dict[int, float] = {}
        self.outstanding: set[int] = set()  # accepted purchases whose chain has not fully arrived
        self.sockets: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []
        self.pool: asyncio.Queue[HttpConnection] = asyncio.Queue()

    async def __aenter__(self) -> "ChainClient":
        from websockets.asyncio.client import connect
        from websockets.typing import Origin

        gate = asyncio.Semaphore(20)

        async def open_socket(token: str) -> None:
            async with gate:
                url = f"ws://127.0.0.1:{self.ws_port}/{self.ws_path}?token={token}"
                # As a browser would: the server checks the Origin against ALLOWED_HOSTS.
                origin = Origin(f"http://127.0.0.1:{self.ws_port}")
                ws = await connect(url, origin=origin, open_timeout=30, max_queue=None)
                self.sockets.append(ws)
                self.readers.append(asyncio.create_task(self._read(ws)))

        await asyncio.gather(*(open_socket(token) for _, token in self.students))
        await asyncio.sleep(1.0)  # consumers have joined their groups
        for _ in range(CONNECTIONS):
            self.pool.put_nowait(HttpConnection(self.http_port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in self.sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        for conn in [self.pool.get_nowait() for _ in range(self.pool.qsize())]:
            await conn.close()

    async def _read(self, ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                arrived = time.time()
                message = json.loads(raw)
                frames = self.frames.get(message.get("type"))
                if frames is None:
                    continue
                purchase_id = int(message["data"]["purchase_id"])
                frames.setdefault(purchase_id, arrived)
                if message["type"] == CHAIN[0]:
                    self.occurred[purchase_id] = datetime.fromisoformat(message["occurred_at"]).timestamp()
                if all(purchase_id in self.frames[t] for t in CHAIN):
                    self.outstanding.discard(purchase_id)

    async def wait_done(
        self, settled: Callable[[], bool], *, timeout: float, purchases: set[int] | None = None
    ) -> bool:
        """Wait, at most `timeout` s, until every chain (of `purchases`, or of all sent so far) arrived and
        `settled()`; whether they did."""
        deadline = time.monotonic() + timeout
        while True:
            pending = self.outstanding if purchases is None else self.outstanding & purchases
            if not pending and settled():
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)

    async def step(
        self,
        *,
        rate: float,
        seconds: float,
        tag: str,
        tail_timeout: float,
        settled: Callable[[], bool] = lambda: True,
        usage: CpuUsage | None = None,
    ) -> Step:
        """Send `rate` webhooks a second for `seconds` (open loop: each at its time, whatever the earlier
        ones are doing), then wait, at most `tail_timeout` s after the last answer, until every accepted
        purchase's whole chain arrived and `settled()` (e.g. no open outbox delivery). `usage`, if given,
        measures the CPU from the first webhook until then."""
        step = Step(rate=rate, seconds=seconds)
        mine: set[int] = set()

        async def send(payment_id: str, student_id: int) -> None:
            body, headers = webhook_request(payment_id=payment_id, student_id=student_id, course_id=self.course_id)
            conn = await self.pool.get()
            started = time.perf_counter()
            try:
                response = await asyncio.wait_for(conn.post(self.webhook_path, body, headers), timeout=30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                step.errors[type(exc).__name__] = step.errors.get(type(exc).__name__, 0) + 1
                await conn.close()
                return
            finally:
                self.pool.put_nowait(conn)
            if response.status != 200:
                step.errors[f"HTTP {response.status}"] = step.errors.get(f"HTTP {response.status}", 0) + 1
                return
            step.response_ms.append((time.perf_counter() - started) * 1000)
            answer = json.loads(response.body)
            if not isinstance(answer, dict) or "purchase_id" not in answer:  # e.g. {"ignored": true}
                step.errors["200 without purchase_id"] = step.errors.get("200 without purchase_id", 0) + 1
                return
            purchase_id = int(answer["purchase_id"])
            sent_at, returned_at = (
                response.headers[COMMIT_SENT_HEADER.lower()],
                response.headers[COMMITTED_HEADER.lower()],
            )
            step.commits[purchase_id] = (float(sent_at), float(returned_at))
            mine.add(purchase_id)
            if not all(purchase_id in self.frames[t] for t in CHAIN):
                self.outstanding.add(purchase_id)

        count = max(int(seconds * rate), 1)
        nonce = time.time_ns()
        tasks = []
        if usage is not None:
            usage.start()
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                step.late_sends += 1
            student_id = self.students[i % len(self.students)][0]
            tasks.append(asyncio.create_task(send(f"chain-{tag}-{nonce}-{i}", student_id)))
        await asyncio.gather(*tasks)
        step.sent, step.send_seconds = count, time.perf_counter() - start
        answered = time.monotonic()
        step.chains_done = await self.wait_done(settled, timeout=tail_timeout, purchases=mine)
        step.chains_done_after_s = time.monotonic() - answered
        if usage is not None:
            usage.stop()
            step.cpu, step.cpu_seconds = usage.used(), usage.seconds()
        step.frames = {t: {p: at for p, at in self.frames[t].items() if p in mine} for t in CHAIN}
        step.occurred = {p: at for p, at in self.occurred.items() if p in mine}
        return step
