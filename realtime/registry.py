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
Each process refreshes all its entries (every field, and their expiry) every quarter of the TTL,
however busy its sockets are, and writes a socket's changes (seq sent, pong, blocked send) within
about `FLUSH_DELAY` of happening. A change writes only the fields that change (`CHANGING`), not the
expiry: a live push costs the registry two small pipelined commands, not four with every field.
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
from redis.commands.core import AsyncScript

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
    beat_at: float  # when its process last refreshed this entry: it expires REALTIME_REGISTRY_TTL_SECONDS after


# The fields a socket's change (touch) rewrites; the others are fixed at registration, or (beat_at)
# move only with the entry's expiry, at each beat.
CHANGING = ("last_sent", "last_pong", "send_blocked_since")
assert set(CHANGING) <= {f.name for f in fields(SocketEntry)}


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


def _blocked_since(tracked: Tracked, now: float) -> float:
    return tracked.sending_since if tracked.sending_since and now - tracked.sending_since > BLOCKED_AFTER else 0.0


def _changing_values(tracked: Tracked, now: float) -> dict[str, object]:
    """The `CHANGING` fields' values."""
    return {
        "last_sent": tracked.cursor,
        "last_pong": tracked.last_pong,
        "send_blocked_since": _blocked_since(tracked, now),
    }


def _changing(tracked: Tracked, now: float) -> list[str]:
    """The `CHANGING` fields and their values, flat (field, value, field, value...), as `_fields` writes them."""
    values = _changing_values(tracked, now)
    return [text for name in CHANGING for text in (name, str(values[name]))]


def _fields(socket_id: str, tracked: Tracked, now: float) -> list[str]:
    """Every `SocketEntry` field and its value, flat (field, value, field, value...)."""
    entry = SocketEntry(
        socket_id=socket_id,
        student_id=int(tracked.student_id or 0),
        process=PROCESS,
        connected_at=tracked.connected_at,
        start_cursor=tracked.start_cursor,
        send_timeout=float(settings.REALTIME_SEND_TIMEOUT_SECONDS),
        beat_at=now,
        **_changing_values(tracked, now),  # type: ignore[arg-type]
    )
    return [text for f in fields(SocketEntry) for text in (f.name, str(getattr(entry, f.name)))]


# Entries per script call: Redis runs a script without serving anyone else, so a process with
# thousands of sockets writes them in a few calls of a couple of milliseconds each.
WRITE_CHUNK = 500
# Many entries in one round trip and one command: per socket, its student key and its hash key in KEYS;
# in ARGV the expiry score, the keys' TTL, whether this is a beat (refresh the sorted-set entry and
# its key's TTL too) and then, per socket, its id, how many field values follow, and those.
_WRITE = """
local score, ttl, beat = ARGV[1], ARGV[2], ARGV[3] == '1'
local a = 4
for i = 1, #KEYS, 2 do
    local n = tonumber(ARGV[a + 1])
    if beat then
        redis.call('ZADD', KEYS[i], score, ARGV[a])
        redis.call('EXPIRE', KEYS[i], ttl)
    end
    redis.call('HSET', KEYS[i + 1], unpack(ARGV, a + 2, a + 1 + n))
    redis.call('EXPIRE', KEYS[i + 1], ttl)
    a = a + 2 + n
end
return 1
"""


class _LocalSockets:
    """This process's open sockets and the task that keeps their entries alive (one per event loop)."""

    def __init__(self) -> None:
        self.sockets: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self.dirty: set[str] = set()
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: aioredis.Redis | None = None
        self.script: AsyncScript | None = None

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
        loop = asyncio.get_running_loop()
        interval = _ttl() / 4
        next_beat = loop.time() + interval
        while True:
            # Beat on time even while changes keep coming: a socket that has nothing to send (or whose
            # send is blocked) is refreshed only by the beat.
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=max(next_beat - loop.time(), 0.0))
                await asyncio.sleep(FLUSH_DELAY)  # let a burst of changes share one write
            except TimeoutError:
                pass
            self.wake.clear()
            everything = loop.time() >= next_beat
            if everything:
                next_beat = loop.time() + interval
            ids = list(self.sockets.keys()) if everything else [i for i in self.dirty if i in self.sockets]
            self.dirty.clear()
            if not ids:
                continue
            try:
                await self.write(ids, everything=everything)
            except (redis.RedisError, OSError) as exc:  # the next beat tries again, well within the TTL
                logger.warning("socket registry: could not refresh %d entries: %s", len(ids), exc)

    async def write(self, ids: list[str], *, everything: bool = True) -> None:
        """Write the entries of `ids`, `WRITE_CHUNK` per script: with `everything`, every field and the
        expiry (a beat); else only the `CHANGING` fields, plus the hash's own TTL so that a hash which
        expired meanwhile (a beat missed for a whole TTL) cannot come back without one. Such a partial
        hash is never read: its socket's sorted-set entry has expired with it, until the next beat
        rewrites both."""
        now = time.time()
        ttl = _ttl()
        head: list[Any] = [now + ttl, int(ttl) + 1, 1 if everything else 0]
        written: dict[str, int] = {}
        for start in range(0, len(ids), WRITE_CHUNK):
            keys: list[str] = []
            args: list[Any] = list(head)
            for socket_id in ids[start : start + WRITE_CHUNK]:
                tracked = self.sockets.get(socket_id)
                if tracked is None or tracked.student_id is None:
                    continue
                written[socket_id] = tracked.student_id
                values = _fields(socket_id, tracked, now) if everything else _changing(tracked, now)
                keys += (student_key(tracked.student_id), socket_key(socket_id))
                args += (socket_id, len(values), *values)
            if not keys:
                continue
            if self.script is None or self.script.registered_client is not self.redis():
                self.script = self.redis().register_script(_WRITE)
            await self.script(keys=keys, args=args)
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
    flat = _fields(socket_id, tracked, now)
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
