"""The contract of outbox/relay/channels_redis_batch.py with the pinned channels-redis.

The batched push repeats channels-redis' `group_send` and calls its private helpers. These tests fail
when an upgrade changes what it relies on: the version list, the private names and their signatures,
the Lua script, and the behaviour on real Redis (a message the batch sends reaches every channel in
the group, in order, as `group_send`'s does, decoded by channels-redis' own receive). On an unchecked
version the relay falls back to the public `group_send`.
"""

import asyncio
import inspect
import re
from importlib import metadata
from typing import Any

import pytest
import redis
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from outbox import readcache
from outbox.redis_client import FAIL_FAST_SECONDS
from outbox.relay import channels_redis_batch, push
from outbox.relay.channels_redis_batch import CHECKED_VERSIONS, GROUP_SEND_LUA, BatchSender, supports


def layer(shards: int = 1) -> RedisChannelLayer:
    # The same Redis twice is still two shards to channels-redis: two pools, groups hashed across them.
    return RedisChannelLayer(hosts=[settings.REDIS_URL] * shards)


def test_the_pinned_channels_redis_is_a_checked_version() -> None:
    """A lock upgrade of channels-redis must come with a read of its group_send (see CHECKED_VERSIONS)."""
    assert metadata.version("channels-redis") in CHECKED_VERSIONS
    assert supports(layer())


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("_group_key", ["self", "group"]),
        ("_map_channel_keys_to_connection", ["self", "channel_names", "message"]),
        ("consistent_hash", ["self", "value"]),
        ("require_valid_group_name", ["self", "name"]),
        ("group_send", ["self", "group", "message"]),
    ],
)
def test_the_internals_it_calls_exist_with_their_signatures(name: str, parameters: list[str]) -> None:
    assert list(inspect.signature(getattr(RedisChannelLayer, name)).parameters) == parameters


def test_the_internals_return_what_it_expects() -> None:
    redis_layer = layer(shards=2)
    assert isinstance(redis_layer.group_expiry, int) and isinstance(redis_layer.expiry, int | float)
    assert redis_layer._group_key("student.1") == f"{redis_layer.prefix}:group:student.1".encode()
    # The batch builds its own clients from the decoded host configuration, as create_pool reads it.
    assert redis_layer.hosts == [{"address": settings.REDIS_URL}] * 2
    keyword = RedisChannelLayer(hosts=[{"address": settings.REDIS_URL, "socket_timeout": 10}])
    assert keyword.hosts == [{"address": settings.REDIS_URL, "socket_timeout": 10}] and supports(keyword)
    assert not supports(RedisChannelLayer(hosts=[("127.0.0.1", 6379)]))  # not by URL: the public path
    to_keys, key_message, key_capacity = redis_layer._map_channel_keys_to_connection(
        ["specific.abc!one", "specific.abc!two", "specific.def!x"], {"type": "t"}
    )
    keys = [k for ks in to_keys.values() for k in ks]
    assert set(to_keys) <= {0, 1} and len(keys) == len(set(keys)) == 2  # one key per server process
    assert set(key_message) == set(key_capacity) == set(keys)
    assert all(isinstance(key_message[k], bytes) and isinstance(key_capacity[k], int) for k in keys)


def test_its_lua_script_is_group_sends() -> None:
    source = inspect.getsource(RedisChannelLayer.group_send)
    found = re.search(r'group_send_lua = """(.*?)"""', source, re.DOTALL)
    assert found is not None

    def words(script: str) -> list[str]:
        return script.split()

    assert words(found.group(1)) == words(GROUP_SEND_LUA)


@pytest.mark.parametrize("shards", [1, 2])
def test_a_batched_message_reaches_every_channel_in_its_group_in_order(shards: int) -> None:
    redis_layer = layer(shards)
    sender = BatchSender(redis_layer)

    async def subscribe() -> list[str]:
        channels = [await redis_layer.new_channel() for _ in range(4)]
        a1, a2, b1, _ = channels
        for group, channel in (("g.a", a1), ("g.a", a2), ("g.b", b1)):
            await redis_layer.group_add(group, channel)
        return channels

    async def receive(channels: list[str]) -> None:
        a1, a2, b1, other = channels
        for channel, expected in ((a1, [1, 4, 5]), (a2, [1, 4, 5]), (b1, [2])):
            received = [await asyncio.wait_for(redis_layer.receive(channel), 5) for _ in expected]
            assert [m["n"] for m in received] == expected
            assert all(m["type"] == "push" for m in received)
        for channel in (a1, b1, other):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(redis_layer.receive(channel), 0.3)

    async def flush() -> None:
        await redis_layer.flush()

    try:
        channels = asyncio.run(subscribe())
        sender.group_send(
            [
                ("g.a", {"type": "push", "n": 1}),
                ("g.b", {"type": "push", "n": 2}),
                ("g.empty", {"type": "push", "n": 3}),
                ("g.a", {"type": "push", "n": 4}),
            ]
        )
        redis.Redis.from_url(settings.REDIS_URL).script_flush()  # as after a Redis restart: NOSCRIPT, loaded again
        sender.group_send([("g.a", {"type": "push", "n": 5})])
        asyncio.run(receive(channels))
    finally:
        sender.close()
        asyncio.run(flush())


@pytest.mark.parametrize("shards", [1, 2])
def test_commands_before_run_in_the_first_round_trip_and_their_errors_fail_the_send(shards: int) -> None:
    """The relay's invalidation rides in a shard's member reads (outbox.relay.push): it has run before
    any message is written, on that shard even when no group of the batch hashes to it, and an error
    in it makes the send raise."""
    redis_layer = layer(shards)
    sender = BatchSender(redis_layer)
    plain = redis.Redis.from_url(settings.REDIS_URL)
    try:
        assert sender.shard_at(settings.REDIS_URL) == 0 and sender.shard_at("redis://elsewhere:1/0") is None
        last = shards - 1
        plain.hset(readcache._key(7), mapping={"floor": 1, "dashboard:seq": 1, "dashboard:body": b"{}"})
        invalidate = (readcache.invalidate_commands({7: 3}), [readcache.INVALIDATE])
        sender.group_send([("g.nobody", {"type": "push"})], before={last: invalidate})
        assert plain.hgetall(readcache._key(7)) == {b"floor": b"3"}
        broken: channels_redis_batch.Before = ([("HSET", readcache._key(7), "floor")], [])  # an argument short
        with pytest.raises(redis.ResponseError):
            sender.group_send([("g.nobody", {"type": "push"})], before={last: broken})
    finally:
        sender.close()


def test_an_unreachable_redis_fails_the_send() -> None:
    sender = BatchSender(RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"]))  # nothing listens there
    with pytest.raises(redis.ConnectionError):
        sender.group_send([("g.a", {"type": "push"})])


def test_an_unchecked_version_falls_back_to_the_public_group_send(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels_redis_batch, "CHECKED_VERSIONS", frozenset({"0.0.0"}))
    sent: list[tuple[str, dict[str, Any]]] = []

    class Recording(RedisChannelLayer):
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            sent.append((group, message))
            await super().group_send(group, message)

    async def scenario() -> None:
        redis_layer = Recording(hosts=[settings.REDIS_URL])
        try:
            assert not supports(redis_layer)
            channel = await redis_layer.new_channel()
            await redis_layer.group_add("g.a", channel)
            await push.group_send_many(redis_layer, [("g.a", {"type": "push", "n": 1}), ("g.b", {"type": "x"})])
            assert (await asyncio.wait_for(redis_layer.receive(channel), 5))["n"] == 1
        finally:
            await redis_layer.flush()

    asyncio.run(scenario())
    assert [g for g, _ in sent] == ["g.a", "g.b"]


def test_its_clients_fail_fast_whatever_the_layers_timeouts() -> None:
    """The layer's timeouts are sized for its consumers' blocking reads; the relay's push must meet a
    hung Redis within seconds (its batch is retried, its heartbeat goes on)."""
    layer = RedisChannelLayer(hosts=[{"address": "redis://127.0.0.1:6379/0", "socket_timeout": 10}])
    sender = BatchSender(layer)
    try:
        kwargs = sender.client(0).connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == FAIL_FAST_SECONDS
        assert kwargs["socket_connect_timeout"] == FAIL_FAST_SECONDS
    finally:
        sender.close()
