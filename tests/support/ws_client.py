"""A real WebSocket client for the tests (the `websockets` package), plus helpers around the server.

`StreamClient` runs its connection on its own event loop in a thread, so synchronous tests (which call
Django services) can drive it and wait on what it recorded with `wait_until`. It records every
message with its arrival time, the close code and reason, and can be told not to read at all — it
then stops taking data off its socket, like an app frozen in the background.
"""

import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import redis
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from config.processes import free_port, port_open
from kernel.push import student_group
from tests.support.processes import Processes
from tests.support.waiting import wait_until

OnEvent = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Received:
    at: float  # time.time() on arrival
    message: dict[str, Any]


class StreamClient:
    """One connection to `/ws/events/`.

    - `token` goes in the query string, `header_token` in `Authorization: Token <key>`.
    - `reading=False`: never read (until `resume_reading()`). With a small `rcvbuf` the client also
      queues at most one message and declines compression, so its TCP window closes after a few KiB
      and the server's sends back up.
    - `on_event`: awaited for each event before the next message is read (e.g. refetch the dashboard).
    """

    def __init__(
        self,
        host: str,
        *,
        token: str | None = None,
        header_token: str | None = None,
        after: int | str | None = None,
        query: dict[str, str] | str | None = None,
        reading: bool = True,
        rcvbuf: int | None = None,
        on_event: OnEvent | None = None,
    ) -> None:
        params = dict(query) if isinstance(query, dict) else {}
        if token is not None:
            params["token"] = token
        if after is not None:
            params["after"] = str(after)
        # A str `query` is appended verbatim (e.g. a repeated parameter).
        raw = "&".join(q for q in (urlencode(params), query if isinstance(query, str) else "") if q)
        self.uri = f"ws://{host}/ws/events/" + (f"?{raw}" if raw else "")
        self.host = host
        self.headers = {"Authorization": f"Token {header_token}"} if header_token else {}
        self.rcvbuf = rcvbuf
        self.on_event = on_event
        self.received: list[Received] = []
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.handshake_error: Exception | None = None
        self.errors: list[BaseException] = []
        self.closed = threading.Event()
        self._reading = asyncio.Event()
        if reading:
            self._reading.set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._conn: ClientConnection | None = None
        self._reader: asyncio.Future[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> "StreamClient":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=15)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _open(self) -> None:
        sock = None
        if self.rcvbuf:
            # The receive buffer must be set before connect() to bound the advertised window.
            host, port = self.host.rsplit(":", 1)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.connect((host, int(port)))
            sock.setblocking(False)
        try:
            self._conn = await connect(
                self.uri,
                additional_headers=self.headers,
                proxy=None,
                sock=sock,
                open_timeout=10,
                ping_interval=None,  # the server's keepalive is under test, not the client's
                max_queue=1 if self.rcvbuf else 16,
                # A constrained client also declines permessage-deflate: compressed, the repetitive
                # event JSON shrinks to a few dozen bytes and a stall would take many more events.
                compression=None if self.rcvbuf else "deflate",
                close_timeout=2,
            )
        except InvalidStatus as exc:
            self.handshake_error = exc
            self.closed.set()
            return
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self._conn is not None
        try:
            while True:
                await self._reading.wait()
                data = await self._conn.recv()
                message = json.loads(data)
                self.received.append(Received(at=time.time(), message=message))
                if self.on_event is not None and "seq" in message:
                    await self.on_event(message)
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else 1006
            self.close_reason = exc.rcvd.reason if exc.rcvd is not None else ""
        except BaseException as exc:  # surfaced by the tests through .errors
            self.errors.append(exc)
            raise
        finally:
            self.closed.set()

    async def _shutdown(self) -> None:
        if self._conn is not None:
            self._reading.set()  # let a paused reader see the close
            await self._conn.close()
        if self._reader is not None:
            # Its outcome is already recorded (close code, or .errors).
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._reader, 5)

    # -- driving ---------------------------------------------------------------------------------

    def resume_reading(self) -> None:
        self._loop.call_soon_threadsafe(self._reading.set)

    def send(self, message: dict[str, Any]) -> None:
        assert self._conn is not None
        asyncio.run_coroutine_threadsafe(self._conn.send(json.dumps(message)), self._loop).result(timeout=10)

    def send_raw(self, data: str | bytes) -> None:
        assert self._conn is not None
        asyncio.run_coroutine_threadsafe(self._conn.send(data), self._loop).result(timeout=10)

    # -- what was received -----------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [r.message for r in self.received]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "seq" in m]

    def seqs(self) -> list[int]:
        return [int(m["seq"]) for m in self.events]

    def last_seq(self) -> int:
        seqs = self.seqs()
        return seqs[-1] if seqs else 0

    def has_seq(self, seq: int) -> bool:
        return any(int(m.get("seq", -1)) == seq for m in self.messages)

    def arrival(self, seq: int) -> float:
        return next(r.at for r in self.received if r.message.get("seq") == seq)

    def wait_for_seq(self, seq: int, *, timeout: float = 20.0) -> None:
        wait_until(lambda: self.last_seq() >= seq or self.closed.is_set(), timeout=timeout, what=f"seq {seq}")
        assert self.last_seq() >= seq, f"connection closed ({self.close_code}) at seq {self.last_seq()}"

    def wait_closed(self, *, timeout: float = 10.0) -> None:
        assert self.closed.wait(timeout), "connection still open"


def gaps(seqs: list[int], *, after: int = 0) -> list[int]:
    """The seqs missing from a client's view of its stream: what a client checks to detect a gap."""
    expected = after + 1
    missing: list[int] = []
    for seq in seqs:
        missing.extend(range(expected, seq))
        expected = max(expected, seq + 1)
    return missing


def group_members(student_id: int) -> int:
    """How many channels are subscribed to the student's group (channels-redis keeps it as a zset)."""
    prefix: str = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]  # type: ignore[index]
    return int(redis.Redis.from_url(settings.REDIS_URL).zcard(f"{prefix}:group:{student_group(student_id)}"))


def tuned_server(
    processes: Processes,
    name: str = "web",
    *,
    sndbuf: int | None = None,
    ping_interval: float = 20.0,
    ping_timeout: float = 20.0,
    **env: str,
) -> str:
    """Start `tests.support.ws_server` (uvicorn with a small socket send buffer and/or fast keepalive)."""
    port = free_port()
    args = ["--port", str(port), "--ws-ping-interval", str(ping_interval), "--ws-ping-timeout", str(ping_timeout)]
    if sndbuf:
        args += ["--sndbuf", str(sndbuf)]
    processes.start(name, [sys.executable, "-m", "tests.support.ws_server", *args], **env)

    wait_until(lambda: port_open(port), timeout=30, what=f"{name} to listen on {port}")
    return f"127.0.0.1:{port}"
