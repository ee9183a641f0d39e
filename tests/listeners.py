"""A real Channels group listener over the Redis channel layer, running in its own thread."""

import asyncio
import threading
from collections import defaultdict
from typing import Any

from channels.layers import get_channel_layer

from kernel.push import student_group


class GroupListener:
    """Subscribes one channel per student group; collects every pushed event per student, in order."""

    def __init__(self, student_ids: list[int]) -> None:
        self.student_ids = student_ids
        self.events: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._ready = threading.Event()
        self._stop = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    def __enter__(self) -> "GroupListener":
        self._thread.start()
        assert self._ready.wait(10), "listener did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(5)

    def seqs(self, student_id: int) -> list[int]:
        return [int(e["seq"]) for e in self.events[student_id]]

    def count(self) -> int:
        return sum(len(v) for v in self.events.values())

    async def _main(self) -> None:
        layer = get_channel_layer()
        assert layer is not None
        channels = {}
        for sid in self.student_ids:
            channel = await layer.new_channel()
            await layer.group_add(student_group(sid), channel)
            channels[sid] = channel
        self._ready.set()
        tasks = [asyncio.create_task(self._consume(layer, sid, ch)) for sid, ch in channels.items()]
        while not self._stop:
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _consume(self, layer: Any, student_id: int, channel: str) -> None:
        while True:
            message = await layer.receive(channel)
            self.events[student_id].extend(message["events"])
