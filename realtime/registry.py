"""The live registry of open sockets, kept in Redis by the `ws` processes.

One registry serves two readers: the per-student socket cap (checked atomically when a socket
registers) and `manage.py trace --student` (which lists a student's sockets and how far behind each
is). Keys, under `REALTIME_REGISTRY_PREFIX`:

- `<prefix>:student:<id>` — a sorted set of the student's socket ids, scored by when each entry
  expires (unix seconds). Entries past their score are ignored and swept by the next registration.
- `<prefix>:socket:<socket id>` — a hash of the socket's fields (`SocketEntry`), with a Redis TTL.

Guarantees: at most `REALTIME_MAX_SOCKETS_PER_STUDENT` live entries per student at registration
(one Lua script: sweep, count, add); every entry expires `REALTIME_REGISTRY_TTL_SECONDS` after its
process last beat, so a killed `ws` process frees its slots and vanishes from the trace on its own.
Each process refreshes all its entries every quarter of the TTL, and a socket's changes (seq sent,
pong, blocked send) within about `FLUSH_DELAY` of happening.
"""

import asyncio
import json
import logging
import os
import socket
import time
import uuid
import weakref
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis
from django.conf import settings

logger = logging.getLogger(__name__)

PROCESS = f"{socket.gethostname()}:{os.getpid()}"
# How long a socket's change may wait before it is written (changes within it share one round trip).
FLUSH_DELAY = 0.2
# A send waiting longer than this is reported as blocked (a healthy send takes microseconds).
BLOCKED_AFTER = 1.0

_REGISTER = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""


@dataclass(frozen=True)
class SocketEntry:
    """What the registry holds about one open socket. Times are unix seconds (UTC); 0 means never."""

    socket_id: str
    student_id: int
    process: str
    connected_at: float
    start_cursor: int  # the seq the stream started after (`after`, or the delivered end)
    last_sent: int  # seq of the last event sent to the client
    last_pong: float
    send_blocked_since: float  # when the pending send started, if it has waited past BLOCKED_AFTER
    send_timeout: float  # its process drops it after a send blocked this long (REALTIME_SEND_TIMEOUT_SECONDS)
    beat_at: float  # when its process last wrote this entry


class Tracked(Protocol):
    """A socket as the registry sees it (the consumer)."""

    student_id: int | None
    cursor: int
    start_cursor: int
    connected_at: float
    last_pong: float
    sending_since: float


def _ttl() -> float:
    return float(settings.REALTIME_REGISTRY_TTL_SECONDS)


def _prefix() -> str:
    return str(settings.REALTIME_REGISTRY_PREFIX)


def student_key(student_id: int) -> str:
    return f"{_prefix()}:student:{student_id}"


def socket_key(socket_id: str) -> str:
    return f"{_prefix()}:socket:{socket_id}"


def _fields(socket_id: str, tracked: Tracked, now: float) -> dict[Any, str]:
    blocked = tracked.sending_since if tracked.sending_since and now - tracked.sending_since > BLOCKED_AFTER else 0.0
    entry = SocketEntry(
        socket_id=socket_id,
        student_id=int(tracked.student_id or 0),
        process=PROCESS,
        connected_at=tracked.connected_at,
        start_cursor=tracked.start_cursor,
        last_sent=tracked.cursor,
        last_pong=tracked.last_pong,
        send_blocked_since=blocked,
        send_timeout=float(settings.REALTIME_SEND_TIMEOUT_SECONDS),
        beat_at=now,
    )
    return {f.name: str(getattr(entry, f.name)) for f in fields(SocketEntry)}


class _LocalSockets:
    """This process's open sockets and the task that keeps their entries alive (one per event loop)."""

    def __init__(self) -> None:
        self.sockets: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self.dirty: set[str] = set()
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: aioredis.Redis | None = None

    def redis(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        if self.loop is not loop or self.client is None:
            # A client (and its pool) belongs to one event loop; tests run several loops in one process.
            self.loop, self.task, self.wake = loop, None, asyncio.Event()
            # A pool that waits for a free connection: hundreds of sockets closing at once each
            # unregister, and a "Too many connections" error would leave their entries until the TTL.
            pool = aioredis.BlockingConnectionPool.from_url(
                settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=3, max_connections=20, timeout=20
            )
            self.client = aioredis.Redis(connection_pool=pool)
        return self.client

    def ensure_beating(self) -> None:
        self.redis()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._beat_forever())

    async def _beat_forever(self) -> None:
        assert self.wake is not None
        interval = _ttl() / 4
        while True:
            everything = True
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=interval)
                everything = False
                await asyncio.sleep(FLUSH_DELAY)  # let a burst of changes share one write
            except TimeoutError:
                pass
            self.wake.clear()
            ids = list(self.sockets.keys()) if everything else [i for i in self.dirty if i in self.sockets]
            self.dirty.clear()
            if not self.sockets:
                continue
            try:
                await self.write(ids)
            except (redis.RedisError, OSError) as exc:  # the next beat tries again, well within the TTL
                logger.warning("socket registry: could not refresh %d entries: %s", len(ids), exc)

    async def write(self, ids: list[str]) -> None:
        now = time.time()
        ttl = _ttl()
        pipe = self.redis().pipeline(transaction=False)
        written: dict[str, int] = {}
        for socket_id in ids:
            tracked = self.sockets.get(socket_id)
            if tracked is None or tracked.student_id is None:
                continue
            written[socket_id] = tracked.student_id
            pipe.zadd(student_key(tracked.student_id), {socket_id: now + ttl})
            pipe.expire(student_key(tracked.student_id), int(ttl) + 1)
            pipe.hset(socket_key(socket_id), mapping=_fields(socket_id, tracked, now))
            pipe.expire(socket_key(socket_id), int(ttl) + 1)
        await pipe.execute()
        # A socket unregistered while this write was on its way may have been written back after its
        # removal: remove it again, rather than leave it holding a slot until the TTL.
        gone = {i: sid for i, sid in written.items() if i not in self.sockets}
        if gone:
            pipe = self.redis().pipeline(transaction=False)
            for socket_id, student_id in gone.items():
                pipe.zrem(student_key(student_id), socket_id)
                pipe.delete(socket_key(socket_id))
            await pipe.execute()


_local = _LocalSockets()


async def register(tracked: Tracked) -> str | None:
    """Add an open socket of `tracked.student_id`; returns its id, or None when the student already
    has `REALTIME_MAX_SOCKETS_PER_STUDENT` live entries (across every `ws` process). Raises
    `redis.RedisError` if Redis is unreachable."""
    assert tracked.student_id is not None
    socket_id = f"{PROCESS}:{uuid.uuid4().hex[:12]}"
    now = time.time()
    ttl = _ttl()
    flat = [v for pair in _fields(socket_id, tracked, now).items() for v in pair]
    added = await _local.redis().eval(
        _REGISTER,
        2,
        student_key(tracked.student_id),
        socket_key(socket_id),
        now,
        now + ttl,
        int(settings.REALTIME_MAX_SOCKETS_PER_STUDENT),
        socket_id,
        int(ttl) + 1,
        *flat,
    )
    if not added:
        return None
    _local.sockets[socket_id] = tracked
    _local.ensure_beating()
    return socket_id


def touch(socket_id: str | None) -> None:
    """The socket's fields changed: write them soon (coalesced with other changes)."""
    if socket_id is None or _local.wake is None:
        return
    _local.dirty.add(socket_id)
    _local.wake.set()


async def unregister(socket_id: str, *, student_id: int) -> None:
    """Remove the entry at once (a closed socket frees its slot). Failures are logged: the entry then
    expires within the TTL."""
    _local.sockets.pop(socket_id, None)
    _local.dirty.discard(socket_id)
    try:
        pipe = _local.redis().pipeline(transaction=False)
        pipe.zrem(student_key(student_id), socket_id)
        pipe.delete(socket_key(socket_id))
        await pipe.execute()
    except (redis.RedisError, OSError) as exc:
        logger.warning("socket registry: could not remove %s (it expires on its own): %s", socket_id, exc)


# -- reading (trace, tests): synchronous ---------------------------------------------------------


@lru_cache(maxsize=1)
def _sync_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=3, socket_connect_timeout=3)


def student_sockets(*, student_id: int, now: float | None = None) -> list[SocketEntry]:
    """The student's live entries, oldest connection first. Raises `redis.RedisError` if unreachable."""
    now = time.time() if now is None else now
    client = _sync_client()
    ids: list[bytes] = client.zrangebyscore(student_key(student_id), now, "+inf")  # type: ignore[assignment]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for socket_id in ids:
        pipe.hgetall(socket_key(socket_id.decode()))
    entries = [_entry(raw) for raw in pipe.execute() if raw]
    return sorted((e for e in entries if e is not None), key=lambda e: e.connected_at)


def _entry(raw: dict[bytes, bytes]) -> SocketEntry | None:
    values = {k.decode(): v.decode() for k, v in raw.items()}
    try:
        return SocketEntry(
            socket_id=values["socket_id"],
            student_id=int(values["student_id"]),
            process=values["process"],
            connected_at=float(values["connected_at"]),
            start_cursor=int(values["start_cursor"]),
            last_sent=int(values["last_sent"]),
            last_pong=float(values["last_pong"]),
            send_blocked_since=float(values["send_blocked_since"]),
            send_timeout=float(values["send_timeout"]),
            beat_at=float(values["beat_at"]),
        )
    except (KeyError, ValueError):  # an entry written by another version: skip rather than fail the trace
        logger.warning("socket registry: unreadable entry %s", json.dumps(values)[:200])
        return None
