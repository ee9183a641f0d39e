"""The outbox's synchronous Redis client: one per process and URL, failing fast; and the pipelines of
commands and Lua scripts that the relay sends in one round trip.

No client-side retries and 2 s timeouts: during an outage a read falls back to the database at once,
the relay's invalidation fails fast and is retried by the relay, and a probe answers within seconds
(redis-py 8 retries 3x by default). The connection pool reconnects by itself once Redis is back.
"""

import hashlib
from collections.abc import Sequence
from functools import cache
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

# One Redis command, as its words: ("ZRANGE", key, 0, -1).
Command = tuple[Any, ...]


FAIL_FAST_SECONDS = 2


@cache
def fail_fast_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=FAIL_FAST_SECONDS, socket_connect_timeout=FAIL_FAST_SECONDS, retry=Retry(NoBackoff(), 0)
    )


class Script:
    """A Lua script called by its SHA1 (EVALSHA): the relay calls its scripts on every batch, and
    sending the source with each call (EVAL) cost bytes and parsing on both sides."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def call(self, keys: Sequence[Any], args: Sequence[Any]) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


def run_pipeline(client: redis.Redis, commands: Sequence[Command], scripts: Sequence[Script]) -> list[Any]:
    """Send `commands` in one pipelined round trip (no MULTI) and return their replies, in order;
    raise the first error among them (or the connection's).

    A script Redis does not know (the first call after a restart or a SCRIPT FLUSH: NOSCRIPT) costs one
    more round trip: `scripts` are loaded and the commands from the first NOSCRIPT reply on are sent
    again, in order, so the commands on one key still run in the order given. A command after it that
    had succeeded runs twice: callers send only idempotent or seq-tagged writes."""
    replies = _execute(client, commands)
    missing = next((i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)), None)
    if missing is not None:
        loads: list[Command] = [("SCRIPT LOAD", script.source) for script in scripts]
        replies = replies[:missing] + _execute(client, [*loads, *commands[missing:]])[len(loads) :]
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _execute(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute(raise_on_error=False)
