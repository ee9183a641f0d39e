"""Load generation: a small keep-alive HTTP/1.1 client on asyncio streams, and signed webhook bodies.

Cheap per request (no client library overhead), so on a 2-core machine most of the CPU goes to the
server under test. Traffic goes to 127.0.0.1 only.
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from benchmarks.harness import WEBHOOK_SECRET
from config.payment_provider import payment_body, signed_headers

HOST = "127.0.0.1"


class HttpError(RuntimeError):
    pass


class HttpConnection:
    """One persistent connection; one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
            self.writer = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> "HttpResponse":
        reused = self.writer is not None
        try:
            return await self._post(path, body, headers)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            # A kept-alive connection the server closed while idle (its keep-alive timeout) fails with no
            # byte of a response: send again on a new one, as HTTP clients do. Anything else is an error.
            partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
            await self.close()
            if not reused or partial:
                raise
            return await self._post(path, body, headers)

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> "HttpResponse":
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await self.writer.drain()
        return await self._response()

    async def _response(self) -> "HttpResponse":
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(p[:-2] for p in parts)
        else:
            body = await self.reader.read()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return HttpResponse(status, headers, body)


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def webhook_request(*, payment_id: str, student_id: int, course_id: int) -> tuple[bytes, dict[str, str]]:
    """A `payment.succeeded` body and its headers, signed as the provider would (valid for 300 s)."""
    body = payment_body(payment_id=payment_id, student_id=student_id, course_id=course_id)
    headers = signed_headers(body, secret=WEBHOOK_SECRET)
    return body, headers


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, of successful requests
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def closed_loop(
    *,
    port: int,
    path: str,
    requests: list[tuple[bytes, dict[str, str]]],
    clients: int,
    duration: float,
) -> LoadResult:
    """`clients` connections each sending the next prepared request as soon as its last one answered,
    for `duration` seconds or until the prepared requests run out (whichever first)."""
    result = LoadResult()
    it = iter(requests)
    deadline = time.perf_counter() + duration

    async def client() -> None:
        conn = HttpConnection(port)
        try:
            while time.perf_counter() < deadline:
                item = next(it, None)
                if item is None:
                    return
                body, headers = item
                started = time.perf_counter()
                try:
                    response = await asyncio.wait_for(conn.post(path, body, headers), timeout=30)
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                    result.error(type(exc).__name__)
                    await conn.close()
                    continue
                if response.status == 200:
                    result.latencies.append(time.perf_counter() - started)
                else:
                    result.error(f"HTTP {response.status}")
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.elapsed = time.perf_counter() - started
    return result
