"""The naive chain's socket (benchmark processes only): forwards every naive push to the student.

`ws://<host>/ws/bench/naive/?token=<key>`, authenticated like the product's stream (`realtime.auth`);
joins the student's group and sends each `naive.event` message's event as it comes: no seq, no
replay, no repair (the naive system has none). Like the product's consumer it dispatches directly,
without Channels' per-message `close_old_connections()` thread hop, so the two sockets differ only in
what the outbox adds.
"""

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from kernel.push import student_group
from realtime.auth import student_id_for_token, token_from_scope

UNAUTHORIZED = 4401


class NaiveEventsConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        key = token_from_scope(self.scope)
        student_id = await student_id_for_token(key) if key else None
        await self.accept()
        if student_id is None:
            await self.close(code=UNAUTHORIZED)
            return
        self.group = student_group(student_id)
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, str(message.get("type", "")).replace(".", "_"), None)
        if handler is not None:
            await handler(message)

    async def naive_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])
