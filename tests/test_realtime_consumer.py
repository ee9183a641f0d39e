"""The consumer's edge cases, driven step by step: races and losses a process test cannot stage on
demand. The consumer runs in-process (Channels' WebsocketCommunicator) on the real Redis channel
layer and PostgreSQL; the relay's steps are taken by hand where a test needs to stop between them
(claim, invalidate, push, settle), and by the real `Relay` otherwise.
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from django.conf import settings

from kernel.push import PUSH_MESSAGE_TYPE, student_group
from outbox import deliveries, readcache
from outbox.models import OutboxEvent
from outbox.operations import events_purge
from outbox.relay import Relay
from purchases.services import student_resync_request
from realtime import selectors
from realtime.consumers import StudentEventsConsumer

pytestmark = pytest.mark.django_db(transaction=True)

Scenario = Callable[[], Awaitable[None]]


class WebsocketCommunicator(ApplicationCommunicator):
    """A WebSocket client speaking ASGI to the consumer directly (channels.testing's own needs daphne)."""

    def __init__(self, path: str) -> None:
        path, _, query = path.partition("?")
        scope = {"type": "websocket", "path": path, "query_string": query.encode(), "headers": [], "subprotocols": []}
        super().__init__(StudentEventsConsumer.as_asgi(), scope)

    async def connect(self, timeout: float = 5) -> bool:
        """True if accepted. (An accept followed by a close is still True; read the close next.)"""
        await self.send_input({"type": "websocket.connect"})
        return bool((await self.receive_output(timeout))["type"] == "websocket.accept")

    async def send_json_to(self, data: dict[str, Any]) -> None:
        await self.send_input({"type": "websocket.receive", "text": json.dumps(data)})

    async def receive_json_from(self, timeout: float = 5) -> Any:
        message = await self.receive_output(timeout)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def disconnect(self, code: int = 1000) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(5)


def run(scenario: Scenario) -> None:
    """Run an async scenario; its sync_to_async steps run on this (the test's) thread."""
    async_to_sync(scenario)()


def emit(student: Any, count: int = 1) -> None:
    for _ in range(count):
        student_resync_request(student_id=student.pk, actor="test")


def deliver_without_push(student: Any) -> list[int]:
    """What the relay does for the student's due realtime deliveries, minus the push: as if the
    channel layer dropped every message. Returns the seqs delivered."""
    claimed = [c for c in deliveries.claim(relay_id="test", limit=100) if c.sink == "realtime"]
    readcache.invalidate_students({c.student_id: c.seq for c in claimed})
    deliveries.settle_done([c.id for c in claimed])
    return [c.seq for c in claimed if c.student_id == student.pk]


def connect(student: Any, query: str = "") -> WebsocketCommunicator:
    path = f"/ws/events/?token={student.auth_token.key}" + (f"&{query}" if query else "")
    return WebsocketCommunicator(path)


async def receive_seqs(communicator: WebsocketCommunicator, count: int) -> list[int]:
    return [int((await communicator.receive_json_from(timeout=5))["seq"]) for _ in range(count)]


def test_an_event_delivered_just_after_the_replay_read_arrives_live(
    student: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the consumer subscribes *before* it reads: an event the relay delivers right after the
    replay's database read is not in the replay, so it must come through the group."""
    emit(student, 2)
    Relay().drain()
    read = selectors.delivered_events_after

    def read_then_deliver(**kwargs: Any) -> list[dict[str, Any]]:
        page = read(**kwargs)
        if not OutboxEvent.objects.filter(seq=3).exists():
            emit(student)
            Relay().drain()  # invalidated and pushed between the read and the end of the replay
        return page

    monkeypatch.setattr(selectors, "delivered_events_after", read_then_deliver)

    async def scenario() -> None:
        communicator = connect(student, "after=0")
        assert await communicator.connect()
        assert await receive_seqs(communicator, 3) == [1, 2, 3]
        await communicator.disconnect()

    run(scenario)


def test_an_event_pushed_before_the_subscription_and_settled_after_the_read_is_sent(student: Any) -> None:
    """The one gap subscribe-then-replay leaves: the relay pushed event 1 while nobody listened, and
    had not yet marked it done when the consumer read the database, so it was neither received nor
    replayed. The consumer saw its delivery in flight and catches up once it settles."""
    emit(student)

    async def scenario() -> None:
        claimed = await sync_to_async(deliveries.claim)(relay_id="test", limit=10)
        event = await OutboxEvent.objects.aget(seq=1)
        await sync_to_async(readcache.invalidate_students)({student.pk: 1})
        layer = get_channel_layer()
        assert layer is not None
        await layer.group_send(
            student_group(student.pk), {"type": PUSH_MESSAGE_TYPE, "events": [event.as_message()]}
        )  # no one subscribed yet: lost
        communicator = connect(student, "after=0")
        assert await communicator.connect()
        assert await communicator.receive_nothing(timeout=0.3)  # not delivered yet: not replayed
        await sync_to_async(deliveries.settle_done)([c.id for c in claimed])
        assert await receive_seqs(communicator, 1) == [1]
        await communicator.disconnect()

    run(scenario)


def test_a_push_that_skips_seqs_is_preceded_by_the_missing_events_from_the_database(student: Any) -> None:
    async def scenario() -> None:
        communicator = connect(student)  # live only, from seq 0
        assert await communicator.connect()
        await sync_to_async(emit)(student, 3)
        assert await sync_to_async(deliver_without_push)(student) == [1, 2, 3]  # pushes "dropped"
        await sync_to_async(emit)(student)
        await sync_to_async(Relay().drain)()  # pushes seq 4 alone
        assert await receive_seqs(communicator, 4) == [1, 2, 3, 4]
        assert await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect()

    run(scenario)


def test_a_ping_catches_up_before_its_pong(student: Any) -> None:
    """A dropped *last* push has no later push to reveal it; the client's ping does."""

    async def scenario() -> None:
        communicator = connect(student)
        assert await communicator.connect()
        await sync_to_async(emit)(student, 2)
        await sync_to_async(deliver_without_push)(student)
        await communicator.send_json_to({"type": "ping"})
        assert await receive_seqs(communicator, 2) == [1, 2]
        assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
        await communicator.disconnect()

    run(scenario)


def test_an_event_not_yet_delivered_is_not_replayed_but_pushed_after_invalidation(student: Any) -> None:
    """Read your event holds for replayed events too: the replay stops before the first event whose
    cache invalidation has not happened; that one comes from the relay, after it invalidates."""
    emit(student, 2)
    Relay().drain()
    emit(student)  # seq 3: committed, relay not yet run

    async def scenario() -> None:
        communicator = connect(student, "after=0")
        assert await communicator.connect()
        assert await receive_seqs(communicator, 2) == [1, 2]
        assert await communicator.receive_nothing(timeout=0.3)
        await sync_to_async(Relay().drain)()
        assert await receive_seqs(communicator, 1) == [3]
        await communicator.disconnect()

    run(scenario)


def test_a_cursor_into_purged_events_is_refused_with_4410(student: Any) -> None:
    emit(student, 3)
    Relay().drain()
    assert events_purge(older_than=timedelta(0)).events == 3
    emit(student, 2)
    Relay().drain()

    async def scenario() -> None:
        for cursor in (0, 1, 2):
            communicator = connect(student, f"after={cursor}")
            assert await communicator.connect()
            closed = await communicator.receive_output(timeout=5)
            assert (closed["type"], closed["code"]) == ("websocket.close", 4410), cursor
            assert "purged" in closed["reason"]
        communicator = connect(student, "after=3")  # the seq its dashboard reflects: fine
        assert await communicator.connect()
        assert await receive_seqs(communicator, 2) == [4, 5]
        await communicator.disconnect()

    run(scenario)


def test_an_unknown_channel_message_does_not_end_the_stream(student: Any) -> None:
    async def scenario() -> None:
        communicator = connect(student)
        assert await communicator.connect()
        layer = get_channel_layer()
        assert layer is not None
        await layer.group_send(student_group(student.pk), {"type": "outbox.something_new", "x": 1})
        await sync_to_async(emit)(student)
        await sync_to_async(Relay().drain)()
        assert await receive_seqs(communicator, 1) == [1]
        await communicator.disconnect()

    run(scenario)


def test_membership_is_refreshed_before_the_group_forgets_it(student: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """channels-redis drops group members older than group_expiry; a connection may outlive that, so
    the consumer re-joins every quarter of it (here: every second)."""
    layer = get_channel_layer()
    assert layer is not None
    monkeypatch.setattr(layer, "group_expiry", 4)
    key = f"{settings.CHANNEL_LAYERS['default']['CONFIG']['prefix']}:group:{student_group(student.pk)}"  # type: ignore[index]
    client = redis.Redis.from_url(settings.REDIS_URL)

    def member_score() -> float:
        entries: Any = client.zrange(key, 0, -1, withscores=True)  # [(member, score)]: one member
        return float(entries[0][1])

    async def scenario() -> None:
        communicator = connect(student)
        assert await communicator.connect()
        joined_at = member_score()
        deadline = time.monotonic() + 5
        while member_score() <= joined_at:
            assert time.monotonic() < deadline, "membership never refreshed"
            await asyncio.sleep(0.05)
        await communicator.disconnect()
        assert client.zcard(key) == 0  # and left on disconnect

    run(scenario)
