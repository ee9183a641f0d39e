"""The channel layer: channels-redis, with a connection pool that waits instead of failing.

channels-redis builds each shard's pool with redis-py's `ConnectionPool`, which raises
`ConnectionError("Too many connections")` once `max_connections` (100 by default) are checked out.
When hundreds of sockets close at once, each consumer's `group_discard` needs a connection at the
same moment: the ones past the limit failed, and their channels stayed in the student's group
(every later push paid for them until `group_expiry`). A `BlockingConnectionPool` makes a caller
wait up to `timeout` seconds for a free connection instead, with the same bound on connections.
"""

from typing import Any

import redis.asyncio as aioredis
from channels_redis.core import RedisChannelLayer


class BlockingRedisChannelLayer(RedisChannelLayer):
    """`RedisChannelLayer` whose pools wait for a connection. Each entry of `hosts` is
    `{"address": <redis url>, "max_connections": N, "timeout": seconds, ...}` (other keys go to the
    connections, as with channels-redis)."""

    def create_pool(self, index: int) -> Any:
        host = dict(self.hosts[index])
        address = host.pop("address", None)
        if address is None:  # sentinel or keyword hosts: channels-redis' own pools
            return super().create_pool(index)
        return aioredis.BlockingConnectionPool.from_url(address, **host)
