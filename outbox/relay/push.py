"""Cache invalidation and socket push for one batch of realtime deliveries.

Invalidate first, then push, so a client that refetches on the push reads fresh data. Both are
idempotent (the cache keeps a seq floor, pushes are seq-tagged), so a batch retried after a failure
here is delivered again safely.
"""

import asyncio
from collections import defaultdict
from typing import Any

from channels.layers import get_channel_layer

from kernel.push import PUSH_MESSAGE_TYPE, student_group
from outbox import readcache
from outbox.deliveries import Claimed
from outbox.relay import channels_redis_batch


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


# At most this many group_send() calls in flight (when the batch module does not apply): one relay
# batch has up to OUTBOX_BATCH_SIZE students, and each call holds a Redis connection while it runs.
GROUP_SEND_CONCURRENCY = 32


async def group_send_many(layer: Any, sends: list[tuple[str, dict[str, Any]]]) -> None:
    """`layer.group_send(group, message)` for every pair, with the effect of doing them one by one:
    batched on a channels-redis version `channels_redis_batch` was checked with, else through the
    channel layer's public `group_send`, at most GROUP_SEND_CONCURRENCY at a time."""
    if not sends:
        return
    if channels_redis_batch.supports(layer):
        await channels_redis_batch.group_send_batch(layer, sends)
        return
    gate = asyncio.Semaphore(GROUP_SEND_CONCURRENCY)

    async def send(group: str, message: dict[str, Any]) -> None:
        async with gate:
            await layer.group_send(group, message)

    await asyncio.gather(*(send(g, m) for g, m in sends))
