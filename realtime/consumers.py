"""The student's event stream: `/ws/events/?token=<key>[&after=<seq>]`.

Joins the student's group first, then replays stored events after the cursor, then forwards live
pushes, dropping any whose seq was already sent: no gap and no duplicate at the seam.
"""

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from outbox.selectors import student_events_after
from realtime.auth import student_id_for_token, token_from_scope
from realtime.groups import student_group

UNAUTHORIZED = 4401
REPLAY_PAGE = 500


class StudentEventsConsumer(AsyncJsonWebsocketConsumer):
    student_id: int | None = None
    last_seq: int = 0
    replaying: bool = True

    async def connect(self) -> None:
        key = token_from_scope(self.scope)
        student_id = await student_id_for_token(key) if key else None
        if student_id is None:
            await self.close(code=UNAUTHORIZED)
            return
        self.student_id = student_id
        self.pending: list[dict[str, Any]] = []
        await self.channel_layer.group_add(student_group(student_id), self.channel_name)
        await self.accept()
        after = _after_param(self.scope)
        if after is None:
            self.replaying = False
            self.last_seq = -1  # live only: forward whatever arrives
            return
        self.last_seq = after
        while True:
            page = await database_sync_to_async(student_events_after)(
                student_id=student_id, after=self.last_seq, limit=REPLAY_PAGE
            )
            for event in page:
                await self._send_event(event.as_message())
            if len(page) < REPLAY_PAGE:
                break
        self.replaying = False
        for message in self.pending:
            await self._send_event(message)
        self.pending = []

    async def disconnect(self, code: int) -> None:
        if self.student_id is not None:
            await self.channel_layer.group_discard(student_group(self.student_id), self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def outbox_events(self, message: dict[str, Any]) -> None:
        for event in message["events"]:
            if self.replaying:
                self.pending.append(event)
            else:
                await self._send_event(event)

    async def _send_event(self, event: dict[str, Any]) -> None:
        seq = int(event["seq"])
        if self.last_seq >= 0 and seq <= self.last_seq:
            return
        self.last_seq = seq
        await self.send_json(event)


def _after_param(scope: dict[str, Any]) -> int | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after")
    if not values:
        return None
    try:
        return max(0, int(values[0]))
    except ValueError:
        return 0
