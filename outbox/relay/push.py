"""Cache invalidation and socket push for one batch of realtime deliveries.

Invalidate first, then push, so a client that refetches on the push reads fresh data. Both are
idempotent (the cache keeps a seq floor, pushes are seq-tagged), so a batch retried after a failure
here is delivered again safely.
"""

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from channels.layers import get_channel_layer

from kernel.push import PUSH_MESSAGE_TYPE, student_group
from outbox import readcache
from outbox.deliveries import Claimed

# The relay's modules share one logger, "outbox.relay" (log filters and alerts match that name).
logger = logging.getLogger("outbox.relay")


def push_batch(claimed: list[Claimed], *, loop: asyncio.AbstractEventLoop) -> None:
    """Invalidate the read models of the batch's students, then push each student's events, in seq
    order, to their group in one message. Raises what Redis raises; nothing is settled here."""
    by_student: dict[int, list[dict[str, object]]] = defaultdict(list)
    for c in claimed:  # claim() sorts by (sink, student, seq)
        # claim() joins every delivery to its event and returns each realtime one's message.
        assert c.message is not None, f"realtime delivery {c.id} was claimed without its message"
        by_student[c.student_id].append(c.message)
    readcache.invalidate_students({c.student_id: c.seq for c in claimed})
    loop.run_until_complete(_push(by_student))


async def _push(by_student: dict[int, list[dict[str, object]]]) -> None:
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    await group_send_many(
        layer,
        [(student_group(sid), {"type": PUSH_MESSAGE_TYPE, "events": msgs}) for sid, msgs in by_student.items()],
    )


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
