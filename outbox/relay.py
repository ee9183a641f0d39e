"""The relay: the only path from committed outbox events to side effects.

Loop: claim a batch of due deliveries (one short transaction, leased), then, with no transaction
open, (1) invalidate the affected students' read models, (2) push their events to their Channels
groups, (3) enqueue one Celery task per handler for its share of the batch; then settle. A relay
killed at any point leaves leases that expire and are claimed again: at-least-once delivery, made
exactly-once by the inbox (handlers) and by idempotent effects (cache floor, seq-tagged pushes).
"""

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

from kernel.push import PUSH_MESSAGE_TYPE, student_group
from outbox import deliveries, metrics, readcache, relay_status
from outbox.deliveries import Claimed
from outbox.models import OutboxEvent, RelayHeartbeat
from outbox.services import NOTIFY_CHANNEL, REALTIME_SINK
from outbox.tasks import run_handler_batch

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
HEARTBEAT_RETENTION = timedelta(days=1)
# A batch that takes longer than this, plus SLOW_BATCH_PER_DELIVERY per delivery, is logged with where
# its time went (an empty claim too: a slow one is a bad plan or a lock, and it delays every event).
SLOW_BATCH_SECONDS = 0.1
SLOW_BATCH_PER_DELIVERY = 0.001


class Relay:
    def __init__(self, *, batch_size: int | None = None, poll_seconds: float | None = None) -> None:
        self.relay_id = f"{socket.gethostname()}:{os.getpid()}"
        self.batch_size = batch_size or settings.OUTBOX_BATCH_SIZE
        self.poll_seconds = poll_seconds if poll_seconds is not None else settings.OUTBOX_POLL_SECONDS
        self.stopping = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._listener: psycopg.Connection[tuple[object, ...]] | None = None
        self.took_all = False
        self.database = relay_status.ConnectionWatch(relay_id=self.relay_id)

    # -- one batch -------------------------------------------------------------------------------

    def step(self) -> int:
        """Claim and deliver one batch; returns how many deliveries it claimed. Sets `took_all`: whether
        the claim took everything that was due (see `deliveries.claim_took_all`)."""
        started = time.perf_counter()
        claimed = deliveries.claim(relay_id=self.relay_id, limit=self.batch_size)
        self.took_all = deliveries.claim_took_all(claimed, limit=self.batch_size)
        marks = [("claim", time.perf_counter())]
        realtime = [c for c in claimed if c.sink == REALTIME_SINK]
        handlers = [c for c in claimed if c.sink != REALTIME_SINK]
        if realtime:
            self._deliver_realtime(realtime)
            marks.append(("realtime", time.perf_counter()))
        if handlers:
            self._dispatch_handlers(handlers)
            marks.append(("handlers", time.perf_counter()))
        _log_if_slow(len(claimed), started, marks)
        return len(claimed)

    def _deliver_realtime(self, claimed: list[Claimed]) -> None:
        # claim() returns each realtime delivery's message; read only events it did not.
        missing = [c.event_id for c in claimed if c.message is None]
        events = {str(e.id): e for e in OutboxEvent.objects.filter(id__in=missing)} if missing else {}
        by_student: dict[int, list[dict[str, object]]] = defaultdict(list)
        for c in claimed:  # claim() sorts by (sink, student, seq)
            by_student[c.student_id].append(c.message if c.message is not None else events[c.event_id].as_message())
        ids = [c.id for c in claimed]
        try:
            # Invalidate before pushing, so a client that refetches on the push reads fresh data.
            readcache.invalidate_students({c.student_id: c.seq for c in claimed})
            self._loop.run_until_complete(self._push(by_student))
        except Exception as exc:  # Redis down or slow: retry later, never lose the delivery
            logger.warning("realtime delivery failed for %d events: %s", len(ids), exc)
            deliveries.settle_failed(ids, error=f"realtime: {exc!r}", may_dead_letter=False)
            metrics.RELAY_FAILURES.labels(REALTIME_SINK).inc(len(ids))
            return
        deliveries.settle_done(ids)
        metrics.RELAY_DELIVERIES.labels(REALTIME_SINK).inc(len(ids))

    async def _push(self, by_student: dict[int, list[dict[str, object]]]) -> None:
        layer = get_channel_layer()
        assert layer is not None, "CHANNEL_LAYERS is not configured"
        await group_send_many(
            layer,
            [(student_group(sid), {"type": PUSH_MESSAGE_TYPE, "events": msgs}) for sid, msgs in by_student.items()],
        )

    def _dispatch_handlers(self, claimed: list[Claimed]) -> None:
        by_sink: dict[str, list[int]] = defaultdict(list)
        for c in claimed:
            by_sink[c.sink].append(c.id)
        for sink, ids in by_sink.items():
            try:
                run_handler_batch.apply_async(args=(sink, ids), retry=False)
            except Exception as exc:  # broker down: back off, the lease keeps them ours meanwhile
                logger.warning("could not enqueue %d deliveries for %s: %s", len(ids), sink, exc)
                deliveries.settle_failed(ids, error=f"enqueue: {exc!r}", may_dead_letter=False)
                metrics.RELAY_FAILURES.labels(sink).inc(len(ids))
                continue
            metrics.RELAY_DELIVERIES.labels(sink).inc(len(ids))
        # Handler deliveries stay in flight: the worker settles them when the handler has run.

    # -- loops -----------------------------------------------------------------------------------

    def drain(self, *, every_batch: Callable[[int], None] | None = None, until_notified: bool = False) -> int:
        """Deliver until nothing is claimable; returns the number of deliveries claimed.

        `every_batch(n)` is called after each batch (the heartbeat, so a long drain still beats). With
        `until_notified`, stop as soon as a batch took everything that was due, without the claim that
        would confirm it (at a steady trickle, half the claims came back empty): whatever commits
        afterwards sends a NOTIFY, which the caller waits for."""
        total = 0
        while not self.stopping.is_set():
            n = self.step()
            total += n
            if n and every_batch is not None:
                every_batch(n)
            if n == 0 or (until_notified and self.took_all):
                break
        return total

    def run_forever(self) -> None:
        """Drain, then sleep until NOTIFY (or the poll interval, for retries and lost notifies)."""
        logger.info("relay %s started", self.relay_id)
        started_at = timezone.now()
        claimed_total = 0
        next_beat = 0.0

        def beat_if_due(claimed: int) -> None:
            nonlocal claimed_total, next_beat
            claimed_total += claimed
            if time.monotonic() >= next_beat:
                self.beat(started_at=started_at, claimed_total=claimed_total)
                next_beat = time.monotonic() + HEARTBEAT_SECONDS

        while not self.stopping.is_set():
            try:
                self._listen()
                self.drain(every_batch=beat_if_due, until_notified=True)
                beat_if_due(0)
                self.database.ok()
                self._wait_for_notify()
            except (OperationalError, InterfaceError, psycopg.Error) as exc:
                self.database.failed(exc)
                self._reset_connections()
                self.stopping.wait(min(self.poll_seconds, 1.0))
            except Exception:
                # Whatever went wrong, the claimed deliveries' leases will expire and be retried; a relay
                # that keeps running is better than one that needs a human to restart it.
                logger.exception("relay %s: unexpected error; continuing", self.relay_id)
                self._reset_connections()
                self.stopping.wait(min(self.poll_seconds, 1.0))
        self._reset_connections()
        logger.info("relay %s stopped", self.relay_id)

    def beat(self, *, started_at: datetime, claimed_total: int) -> None:
        """Record that this relay is alive (read by /healthz, /metrics, `outbox status` and `trace`)."""
        now = timezone.now()
        RelayHeartbeat.objects.update_or_create(
            relay_id=self.relay_id, defaults={"started_at": started_at, "beat_at": now, "claimed_total": claimed_total}
        )
        # Relays come and go with their pids: forget the ones silent for a day.
        RelayHeartbeat.objects.filter(beat_at__lt=now - HEARTBEAT_RETENTION).delete()

    def _listen(self) -> None:
        """LISTEN before claiming: a NOTIFY for anything that commits after a claim's snapshot then
        waits on this connection until `_wait_for_notify` reads it."""
        if self._listener is None:
            self._listener = psycopg.connect(**_conninfo(), autocommit=True)
            self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def _wait_for_notify(self) -> None:
        self._listen()
        assert self._listener is not None
        for _ in self._listener.notifies(timeout=self.poll_seconds, stop_after=1):
            break

    def _reset_connections(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(psycopg.Error):
                self._listener.close()
            self._listener = None
        close_old_connections()
        with contextlib.suppress(OperationalError, InterfaceError):
            connection.close()

    def stop(self) -> None:
        self.stopping.set()


def _log_if_slow(claimed: int, started: float, marks: list[tuple[str, float]]) -> None:
    took = marks[-1][1] - started
    if took <= SLOW_BATCH_SECONDS + claimed * SLOW_BATCH_PER_DELIVERY:
        return
    steps = itertools.pairwise([("", started), *marks])
    logger.warning(
        "slow batch: %d deliveries in %.0f ms (%s)",
        claimed,
        took * 1000,
        ", ".join(f"{name} {(at - before) * 1000:.0f} ms" for (_, before), (name, at) in steps),
    )


def _conninfo() -> dict[str, Any]:
    """Exactly what Django connects with: its own `get_connection_params()`, so every DATABASE_URL form
    that dj-database-url accepts (`?host=<socket dir>`, a percent-encoded socket path as the host,
    `sslmode` and every other option) reaches the LISTEN connection too. Only the Python-side cursor
    class and adapters are left out: a connection that only LISTENs uses neither."""
    params: dict[str, Any] = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return params


# -- pushing a batch ------------------------------------------------------------------------------

# At most this many plain group_send() calls in flight (layers other than channels-redis): one relay
# batch has up to OUTBOX_BATCH_SIZE students, and each call holds a Redis connection while it runs.
GROUP_SEND_CONCURRENCY = 32

# channels-redis' own group_send script (channels_redis.core, 4.x): add the message to each channel
# key below its capacity, refresh the key's expiry; returns how many keys were full.
_GROUP_SEND_LUA = """
local over_capacity = 0
local current_time = ARGV[#ARGV - 1]
local expiry = ARGV[#ARGV]
for i=1,#KEYS do
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
        redis.call('ZADD', KEYS[i], current_time, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""


async def group_send_many(layer: Any, sends: list[tuple[str, dict[str, Any]]]) -> None:
    """`layer.group_send(group, message)` for every pair, with the effect of doing them one by one.

    On channels-redis this takes two pipelined round trips per Redis shard for the whole batch (read
    and expire every group's members; then, for the groups that have members, expire and fill their
    channel keys), where one group_send per group takes two to four round trips each: with hundreds
    of students per batch the pushes, not the database, were the relay's bottleneck. It does what
    channels-redis' group_send does, step for step, using the layer's own helpers (checked here, so an
    incompatible channels-redis falls back to the plain calls). A group's messages keep their order:
    each batch's commands for one key go down one connection, in order, after the previous batch's.
    """
    if not sends:
        return
    if not _is_batchable(layer):
        gate = asyncio.Semaphore(GROUP_SEND_CONCURRENCY)

        async def send(group: str, message: dict[str, Any]) -> None:
            async with gate:
                await layer.group_send(group, message)

        await asyncio.gather(*(send(g, m) for g, m in sends))
        return
    for group, _ in sends:
        assert layer.require_valid_group_name(group), "Group name not valid"
    # 1. Every group's live members: drop members older than group_expiry, read the rest.
    by_shard: dict[int, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for group, message in sends:
        by_shard[layer.consistent_hash(group)].append((group, message))

    async def members(index: int, items: list[tuple[str, dict[str, Any]]]) -> list[tuple[dict[str, Any], list[str]]]:
        pipe = layer.connection(index).pipeline(transaction=False)
        cutoff = int(time.time()) - layer.group_expiry
        for group, _ in items:
            key = layer._group_key(group)
            pipe.zremrangebyscore(key, min=0, max=cutoff)
            pipe.zrange(key, 0, -1)
        replies = await pipe.execute()
        return [(message, [x.decode("utf8") for x in replies[2 * i + 1]]) for i, (_, message) in enumerate(items)]

    found = await asyncio.gather(*(members(index, items) for index, items in by_shard.items()))
    # 2. For each group with members: its message to each channel key (one per server process).
    scripts: dict[int, list[tuple[list[Any], list[Any]]]] = defaultdict(list)
    for message, channel_names in (pair for shard in found for pair in shard):
        if not channel_names:
            continue
        to_keys, key_message, key_capacity = layer._map_channel_keys_to_connection(channel_names, message)
        for index, keys in to_keys.items():
            args = [key_message[k] for k in keys] + [key_capacity[k] for k in keys]
            scripts[index].append((keys, args))

    async def deliver(index: int, items: list[tuple[list[Any], list[Any]]]) -> int:
        pipe = layer.connection(index).pipeline(transaction=False)
        cutoff = int(time.time()) - int(layer.expiry)
        evals = []
        for keys, args in items:
            for key in keys:
                pipe.zremrangebyscore(key, min=0, max=cutoff)
            evals.append(len(pipe))
            pipe.eval(_GROUP_SEND_LUA, len(keys), *keys, *args, time.time(), layer.expiry)
        replies = await pipe.execute()
        return sum(int(replies[i]) for i in evals)

    full = await asyncio.gather(*(deliver(index, items) for index, items in scripts.items()))
    if sum(full):
        logger.info("push: %d channel keys over capacity (their clients repair from the database)", sum(full))


def _is_batchable(layer: Any) -> bool:
    try:
        from channels_redis.core import RedisChannelLayer
    except ImportError:  # pragma: no cover (channels-redis is a dependency)
        return False
    return isinstance(layer, RedisChannelLayer) and all(
        hasattr(layer, name)
        for name in (
            "consistent_hash",
            "connection",
            "_group_key",
            "_map_channel_keys_to_connection",
            "group_expiry",
            "expiry",
            "require_valid_group_name",
        )
    )
