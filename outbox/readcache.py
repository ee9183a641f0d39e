"""Per-student read models in Redis, versioned by the student's event seq.

A student's views share one hash: `floor` (the highest seq the relay has invalidated for) and, per
view, `<view>:seq` + `<view>:body`. A cached view is served only if its seq >= floor. A fill is refused
if its seq is below the floor or below the view already cached, so a read that started before an
event's COMMIT can never put its older view back after the relay's invalidation (invariant 5 in docs/architecture.md).

Only the relay calls `invalidate_students`; readers call `fetch`. The TTL is a safety net.
"""

import contextlib
from collections.abc import Callable

import redis
from django.conf import settings

from outbox.redis_client import Command, Script, fail_fast_client, run_pipeline

_FILL = """
local floor = tonumber(redis.call('HGET', KEYS[1], 'floor') or '0')
local seq = tonumber(ARGV[2])
if seq < floor then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':seq') or '-1')
if seq < current then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. ':seq', ARGV[2], ARGV[1] .. ':body', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

_INVALIDATE = """
local floor = tonumber(redis.call('HGET', KEYS[1], 'floor') or '0')
local seq = tonumber(ARGV[1])
if seq > floor then floor = seq end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'floor', floor)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return floor
"""
INVALIDATE = Script(_INVALIDATE)


def _client() -> redis.Redis:
    return fail_fast_client(settings.READ_CACHE_URL)


def _key(student_id: int) -> str:
    return f"{settings.READ_CACHE_PREFIX}:student:{student_id}"


def fetch(*, student_id: int, view: str, build: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes, bool]:
    """Return `(seq, body, from_cache)` for a student's view, building and filling it on a miss.

    `build` must return the body together with the seq its snapshot reflects. If Redis is unreachable
    the view is built from the database (reads degrade, they don't fail).
    """
    client = _client()
    key = _key(student_id)
    try:
        floor, seq, body = client.hmget(key, ["floor", f"{view}:seq", f"{view}:body"])
    except redis.RedisError:
        built_seq, built_body = build()
        return built_seq, built_body, False
    if body is not None and seq is not None and int(seq) >= int(floor or 0):
        return int(seq), body if isinstance(body, bytes) else body.encode(), True
    built_seq, built_body = build()
    with contextlib.suppress(redis.RedisError):  # a failed fill only costs the next reader a rebuild
        client.eval(_FILL, 1, key, view, built_seq, built_body, settings.READ_CACHE_TTL_SECONDS)
    return built_seq, built_body, False


def invalidate_students(floors: dict[int, int]) -> None:
    """Raise each student's floor to the given seq and drop their cached views (idempotent).

    One pipelined round trip for the whole batch. Raises `redis.RedisError` so the relay retries.
    """
    if floors:
        run_pipeline(_client(), invalidate_commands(floors), [INVALIDATE])


def invalidate_commands(floors: dict[int, int]) -> list[Command]:
    """What `invalidate_students` sends (calls of INVALIDATE), for a caller that sends them in a round
    trip of its own to READ_CACHE_URL's Redis: the relay, with its pushes' first one (outbox.relay.push)."""
    ttl = settings.READ_CACHE_TTL_SECONDS
    return [INVALIDATE.call([_key(student_id)], [seq, ttl]) for student_id, seq in floors.items()]


def peek(*, student_id: int, view: str) -> tuple[int | None, int | None]:
    """`(floor, seq of the cached view)` for a student, None where absent (for `trace --student`).
    Raises `redis.RedisError` if Redis is unreachable."""
    floor, seq = _client().hmget(_key(student_id), ["floor", f"{view}:seq"])
    return (int(floor) if floor is not None else None), (int(seq) if seq is not None else None)
