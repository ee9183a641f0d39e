"""Many channels-redis group_send()s in two pipelined Redis round trips per shard.

One group_send per group takes two to four round trips each; with hundreds of students per relay batch
the pushes, not the database, were the relay's bottleneck. `group_send_batch` does what channels-redis'
`RedisChannelLayer.group_send` does, step for step, for a whole batch: (1) read and expire every group's
members, (2) for the groups that have members, expire and fill their channel keys. A group's messages
keep their order: each batch's commands for one key go down one connection, in order, after the
previous batch's.

It calls channels-redis internals (`_group_key`, `_map_channel_keys_to_connection`, `consistent_hash`,
`connection`, `group_expiry`, `expiry`) and repeats its Lua script, so it runs only on the channels-redis
versions it was checked against (CHECKED_VERSIONS; `supports()`); on any other version the relay uses
the public `group_send`. tests/test_channels_redis_batch.py is the contract test against the pinned
version: it fails when those internals change. This is the only module that touches them.
"""

import asyncio
import logging
import time
from collections import defaultdict
from importlib import metadata
from typing import Any

from channels_redis.core import RedisChannelLayer

# The relay's modules share one logger, "outbox.relay" (log filters and alerts match that name).
logger = logging.getLogger("outbox.relay")

# Before adding a version here, read its `RedisChannelLayer.group_send` against `group_send_batch` and
# run tests/test_channels_redis_batch.py with it installed.
CHECKED_VERSIONS = frozenset({"4.3.0"})
INSTALLED_VERSION = metadata.version("channels-redis")

# channels-redis' own group_send script (channels_redis.core, 4.x): add the message to each channel
# key below its capacity, refresh the key's expiry; returns how many keys were full.
GROUP_SEND_LUA = """
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


def supports(layer: Any) -> bool:
    """Whether `group_send_batch` may be used for `layer`: a channels-redis layer of a checked version."""
    return INSTALLED_VERSION in CHECKED_VERSIONS and isinstance(layer, RedisChannelLayer)


async def group_send_batch(layer: RedisChannelLayer, sends: list[tuple[str, dict[str, Any]]]) -> None:
    """`layer.group_send(group, message)` for every pair, with the effect of doing them one by one
    (only for a layer that `supports()` accepts)."""
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
            pipe.eval(GROUP_SEND_LUA, len(keys), *keys, *args, time.time(), layer.expiry)
        replies = await pipe.execute()
        return sum(int(replies[i]) for i in evals)

    full = await asyncio.gather(*(deliver(index, items) for index, items in scripts.items()))
    if sum(full):
        logger.info("push: %d channel keys over capacity (their clients repair from the database)", sum(full))
