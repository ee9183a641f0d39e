"""Many channels-redis group_send()s in two pipelined Redis round trips per shard, synchronously.

One group_send per group takes two to four round trips each; with hundreds of students per relay batch
the pushes, not the database, were the relay's bottleneck. `BatchSender.group_send` does what
channels-redis' `RedisChannelLayer.group_send` does, step for step, for a whole batch: (1) read and
expire every group's members, (2) for the groups that have members, expire and fill their channel keys.
A group's messages keep their order: each batch's commands for one key go down one connection, in
order, after the previous batch's.

It is synchronous, with redis-py's blocking clients (one per shard, built from the layer's own host
configuration and kept for the sender's life). It replaced the same two steps on the layer's asyncio
pools, run by `run_until_complete` once per batch: at the relay's usual batch (one event) the event
loop's machinery and the async pipelines cost more CPU than the work itself (asyncio alone was a sixth
of the relay's samples). Its scripts go as EVALSHA (40 bytes instead of the script each time), loaded
again when Redis answers NOSCRIPT (`outbox.redis_client.run_pipeline`).

It calls channels-redis internals (`hosts`, `_group_key`, `_map_channel_keys_to_connection`,
`consistent_hash`, `group_expiry`, `expiry`) and repeats its Lua script, so it runs only on the
channels-redis versions it was checked against (CHECKED_VERSIONS; `supports()`); on any other version
the relay uses the public `group_send`. tests/test_channels_redis_batch.py is the contract test against
the pinned version: it fails when those internals change. This is the only module that touches them.
"""

import logging
import time
from collections import defaultdict
from importlib import metadata
from typing import Any

import redis
from channels_redis.core import RedisChannelLayer
from redis.backoff import NoBackoff
from redis.retry import Retry

from outbox.redis_client import FAIL_FAST_SECONDS, Command, Script, run_pipeline

# The relay's modules share one logger, "outbox.relay" (log filters and alerts match that name).
logger = logging.getLogger("outbox.relay")

# Before adding a version here, read its `RedisChannelLayer.group_send` against `BatchSender.group_send`
# and run tests/test_channels_redis_batch.py with it installed.
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
GROUP_SEND = Script(GROUP_SEND_LUA)

# Commands a caller adds to a shard's first round trip (see `BatchSender.group_send`'s `before`).
Before = tuple[list[Command], list[Script]]


def supports(layer: Any) -> bool:
    """Whether `BatchSender` may be used for `layer`: a channels-redis layer of a checked version whose
    hosts are all given by URL (`{"address": ...}`: sentinel hosts go through the public group_send)."""
    return (
        INSTALLED_VERSION in CHECKED_VERSIONS
        and isinstance(layer, RedisChannelLayer)
        and all("address" in host for host in layer.hosts)
    )


class BatchSender:
    """Group sends for one channels-redis layer that `supports()` accepts, with a synchronous Redis
    client per shard, reused from batch to batch."""

    def __init__(self, layer: RedisChannelLayer) -> None:
        assert supports(layer), "BatchSender needs a layer that supports() accepts"
        self.layer = layer
        self._clients: dict[int, redis.Redis] = {}

    def shard_at(self, url: str) -> int | None:
        """The index of the layer's shard whose Redis is `url` (the same URL, so the same server and
        database), or None."""
        return next((i for i, host in enumerate(self.layer.hosts) if host["address"] == url), None)

    def client(self, index: int) -> redis.Redis:
        """The shard's client: the layer's host configuration (URL, pool bounds, as the
        layer's own `create_pool` reads it), blocking instead of asyncio. No client-side retries, like
        the outbox's other clients (`outbox.redis_client`): a failed batch is retried by the relay."""
        if index not in self._clients:
            host = dict(self.layer.hosts[index])
            address = host.pop("address")
            host["retry"] = Retry(NoBackoff(), 0)
            # The layer's timeouts are sized for its consumers' blocking reads (10 s); the relay never
            # blocks on Redis and must fail fast, like `outbox.redis_client`'s client, so that a batch
            # meets a hung or unreachable Redis in seconds and is retried, and the heartbeat goes on.
            host["socket_timeout"] = host["socket_connect_timeout"] = FAIL_FAST_SECONDS
            self._clients[index] = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(address, **host))
        return self._clients[index]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
            client.connection_pool.disconnect()
        self._clients.clear()

    def group_send(self, sends: list[tuple[str, dict[str, Any]]], *, before: dict[int, Before] | None = None) -> None:
        """`layer.group_send(group, message)` for every pair, with the effect of doing them one by one.

        `before` maps a shard index to commands (and the scripts they call) to send in that shard's
        first round trip: they have run, successfully, before any message is written to any channel
        key (the relay's cache invalidation rides there). Raises the first error Redis returns, for
        those commands too; a message may then have reached some groups and not others."""
        layer = self.layer
        for group, _ in sends:
            assert layer.require_valid_group_name(group), "Group name not valid"
        # 1. Every group's live members: drop members older than group_expiry, read the rest.
        by_shard: dict[int, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for group, message in sends:
            by_shard[layer.consistent_hash(group)].append((group, message))
        found: list[tuple[dict[str, Any], list[str]]] = []
        cutoff = int(time.time()) - layer.group_expiry
        for index in sorted(by_shard.keys() | (before or {}).keys()):
            items = by_shard.get(index, [])
            commands, scripts = (before or {}).get(index, ([], []))
            skip = len(commands)
            commands = list(commands)
            for group, _ in items:
                key = layer._group_key(group)
                commands += [("ZREMRANGEBYSCORE", key, 0, cutoff), ("ZRANGE", key, 0, -1)]
            replies = run_pipeline(self.client(index), commands, scripts)[skip:]
            found += [(message, [x.decode("utf8") for x in replies[2 * i + 1]]) for i, (_, message) in enumerate(items)]
        # 2. For each group with members: its message to each channel key (one per server process).
        deliveries: dict[int, list[Command]] = defaultdict(list)
        stamp = 0.0
        for message, channel_names in found:
            if not channel_names:
                continue
            # A message's score in its channel key is its send time, and the receiver pops the lowest
            # first: one batch's messages get strictly increasing stamps, or two for one key (a group
            # twice, or two groups with members in one server process) could come out swapped.
            stamp = max(time.time(), stamp + 1e-6)
            to_keys, key_message, key_capacity = layer._map_channel_keys_to_connection(channel_names, message)
            for index, keys in to_keys.items():
                args = [key_message[k] for k in keys] + [key_capacity[k] for k in keys]
                deliveries[index] += [("ZREMRANGEBYSCORE", key, 0, int(stamp) - int(layer.expiry)) for key in keys]
                deliveries[index].append(GROUP_SEND.call(keys, [*args, stamp, layer.expiry]))
        full = 0
        for index, commands in deliveries.items():
            replies = run_pipeline(self.client(index), commands, [GROUP_SEND])
            full += sum(int(reply) for command, reply in zip(commands, replies, strict=True) if command[0] == "EVALSHA")
        if full:
            logger.info("push: %d channel keys over capacity (their clients repair from the database)", full)
