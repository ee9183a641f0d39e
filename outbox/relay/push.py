"""Cache invalidation and socket push for one batch of realtime deliveries.

Invalidate first, then push, so a client that refetches on the push reads fresh data. Both are
idempotent (the cache keeps a seq floor, pushes are seq-tagged), so a batch retried after a failure
here is delivered again safely.
"""

import asyncio
from collections import defaultdict
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from kernel.push import PUSH_MESSAGE_TYPE, student_group
from outbox import readcache
from outbox.deliveries import Claimed
from outbox.relay import channels_redis_batch
from outbox.relay.channels_redis_batch import BatchSender


class Pusher:
    """Pushes the relay's batches. Keeps what a batch needs from one batch to the next: the channel
    layer's synchronous Redis clients (`BatchSender`) or, on a channels-redis version that module was
    not checked against, an event loop for the layer's public `group_send`."""

    def __init__(self) -> None:
        self._sender: BatchSender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def push_batch(self, claimed: list[Claimed]) -> None:
        """Invalidate the read models of the batch's students, then push each student's events, in seq
        order, to their group in one message. Raises what Redis raises; nothing is settled here."""
        by_student: dict[int, list[dict[str, object]]] = defaultdict(list)
        for c in claimed:  # claim() sorts by (sink, student, seq)
            # claim() joins every delivery to its event and returns each realtime one's message.
            assert c.message is not None, f"realtime delivery {c.id} was claimed without its message"
            by_student[c.student_id].append(c.message)
        floors = {c.student_id: c.seq for c in claimed}
        sends = [(student_group(sid), {"type": PUSH_MESSAGE_TYPE, "events": msgs}) for sid, msgs in by_student.items()]
        layer = get_channel_layer()
        assert layer is not None, "CHANNEL_LAYERS is not configured"
        if not channels_redis_batch.supports(layer):
            readcache.invalidate_students(floors)
            self._run(group_send_many(layer, sends))
            return
        sender = self._sender_for(layer)
        shard = sender.shard_at(settings.READ_CACHE_URL)
        if shard is None:  # the read cache lives on another Redis: its own round trip, first
            readcache.invalidate_students(floors)
            sender.group_send(sends)
        else:
            # The invalidation rides in that shard's first round trip (with the group member reads),
            # which completes before any message is written: one round trip less per batch.
            before = {shard: (readcache.invalidate_commands(floors), [readcache.INVALIDATE])}
            sender.group_send(sends, before=before)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _sender_for(self, layer: Any) -> BatchSender:
        if self._sender is None or self._sender.layer is not layer:  # a new layer: settings changed
            if self._sender is not None:
                self._sender.close()
            self._sender = BatchSender(layer)
        return self._sender

    def _run(self, coroutine: Any) -> None:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(coroutine)


# At most this many group_send() calls in flight (when the batch module does not apply): one relay
# batch has up to OUTBOX_BATCH_SIZE students, and each call holds a Redis connection while it runs.
GROUP_SEND_CONCURRENCY = 32


async def group_send_many(layer: Any, sends: list[tuple[str, dict[str, Any]]]) -> None:
    """`layer.group_send(group, message)` for every pair, with the effect of doing them one by one, at
    most GROUP_SEND_CONCURRENCY at a time: through the channel layer's public `group_send`, for a layer
    `channels_redis_batch` does not support (the relay's `Pusher` sends the others itself)."""
    if not sends:
        return
    gate = asyncio.Semaphore(GROUP_SEND_CONCURRENCY)

    async def send(group: str, message: dict[str, Any]) -> None:
        async with gate:
            await layer.group_send(group, message)

    await asyncio.gather(*(send(g, m) for g, m in sends))
