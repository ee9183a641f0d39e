"""Test and benchmark support: a real Channels group listener (imported by tests and benchmarks only).

Imports the channel layer (channels): a test-support module.
"""

import asyncio
import threading
from collections import defaultdict
from typing import Any

from channels.layers import get_channel_layer

from kernel.push import student_group


class GroupListener:
    """Subscribes one channel to each given student's group over the real channel layer, in a thread of
    its own, and keeps every event pushed to them, per student and in arrival order, so a test or a
    drain benchmark can check that pushes arrived, once each, in order."""

    def __init__(self, student_ids: list[int]) -> None:
        self.student_ids = student_ids
        self.events: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> "GroupListener":
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"listener did not subscribe: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def seqs(self, student_id: int) -> list[int]:
        return [int(e["seq"]) for e in self.events[student_id]]

    def count(self) -> int:
        return sum(len(v) for v in self.events.values())

    async def _main(self) -> None:
        try:
            layer = get_channel_layer()
            assert layer is not None, "CHANNEL_LAYERS is not configured"
            channels = {}
            for sid in self.student_ids:
                channel = await layer.new_channel()
                await layer.group_add(student_group(sid), channel)
                channels[sid] = channel
        except BaseException as exc:
            self.error = exc
            raise
        self._ready.set()
        tasks = [asyncio.create_task(self._consume(layer, sid, ch)) for sid, ch in channels.items()]
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sid, channel in channels.items():
            await layer.group_discard(student_group(sid), channel)

    async def _consume(self, layer: Any, student_id: int, channel: str) -> None:
        while True:
            message = await layer.receive(channel)
            self.events[student_id].extend(message.get("events", []))
