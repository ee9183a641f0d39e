"""The outbox's synchronous Redis client: one per process and URL, failing fast.

No client-side retries and 2 s timeouts: during an outage a read falls back to the database at once,
the relay's invalidation fails fast and is retried by the relay, and a probe answers within seconds
(redis-py 8 retries 3x by default). The connection pool reconnects by itself once Redis is back.
"""

from functools import cache

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


@cache
def fail_fast_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
