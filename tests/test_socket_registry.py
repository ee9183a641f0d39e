"""The socket registry's writes (realtime/registry.py), in-process against the real Redis: the beat
refreshes every entry on time even while other sockets change all the time, and a socket's change
reaches its entry (and only the fields that change) within the flush delay."""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from realtime import registry
from realtime.registry import SocketEntry


@dataclass(eq=False)
class Socket:
    """What the registry reads of a consumer (`registry.Tracked`)."""

    student_id: int | None
    connected_at: float
    cursor: int = 0
    start_cursor: int = 0
    last_pong: float = 0.0
    sending_since: float = 0.0


def entries(student_id: int) -> list[SocketEntry]:
    return registry.student_sockets(student_id=student_id)


# How long a test waits for a write it expects: far beyond the flush delay, so that a loaded machine
# cannot fail it; a write that never comes still fails it.
WRITE_BOUND = 20.0


@pytest.fixture
def short_ttl(settings: Any) -> float:
    settings.REALTIME_REGISTRY_TTL_SECONDS = 2.0
    return 2.0


def test_a_quiet_socket_stays_registered_while_another_is_pushed_to_without_pause(short_ttl: float) -> None:
    quiet, busy = Socket(student_id=990_001, connected_at=time.time()), Socket(student_id=990_002, connected_at=0.0)
    quiet_student, busy_student = 990_001, 990_002

    async def scenario() -> tuple[list[SocketEntry], list[SocketEntry]]:
        quiet_id, busy_id = await registry.register(quiet), await registry.register(busy)
        assert quiet_id is not None and busy_id is not None
        try:
            # A push every 50 ms, for well over the TTL: the flush is always due before the beat is.
            until = time.monotonic() + 2.5 * short_ttl
            while time.monotonic() < until:
                busy.cursor += 1
                registry.touch(busy_id)
                await asyncio.sleep(0.05)
            return entries(quiet_student), entries(busy_student)
        finally:
            await registry.unregister(quiet_id, student_id=quiet_student)
            await registry.unregister(busy_id, student_id=busy_student)

    quiet_entries, busy_entries = asyncio.run(scenario())
    assert [e.student_id for e in quiet_entries] == [quiet_student]
    assert time.time() - quiet_entries[0].beat_at <= short_ttl  # refreshed by a beat, not only registered
    assert [e.student_id for e in busy_entries] == [busy_student]
    assert entries(quiet_student) == entries(busy_student) == []


def test_a_change_is_written_and_the_fixed_fields_stay() -> None:
    # The default TTL: its beat (every quarter of it) is seconds away, so the flush writes the change
    # (the bound below is generous on purpose: how soon is not what this checks).
    student = 990_003
    sock = Socket(student_id=student, connected_at=1_700_000_000.5, start_cursor=4, cursor=4)

    async def scenario() -> tuple[SocketEntry, SocketEntry]:
        socket_id = await registry.register(sock)
        assert socket_id is not None
        try:
            (registered,) = entries(student)
            sock.cursor, sock.last_pong = 7, 1_700_000_100.25
            registry.touch(socket_id)
            changed_by = time.monotonic() + WRITE_BOUND
            while time.monotonic() < changed_by:
                (entry,) = entries(student)
                if entry.last_sent == 7:
                    return registered, entry
                await asyncio.sleep(0.02)
            raise AssertionError(f"change not written within {WRITE_BOUND}s: {entry}")
        finally:
            await registry.unregister(socket_id, student_id=student)

    registered, changed = asyncio.run(scenario())
    assert (registered.last_sent, registered.start_cursor, registered.last_pong) == (4, 4, 0.0)
    assert (changed.last_sent, changed.last_pong, changed.send_blocked_since) == (7, 1_700_000_100.25, 0.0)
    fixed = ("socket_id", "student_id", "process", "connected_at", "start_cursor", "send_timeout")
    assert {f: getattr(changed, f) for f in fixed} == {f: getattr(registered, f) for f in fixed}
    assert changed.connected_at == 1_700_000_000.5


def test_a_write_of_more_entries_than_one_script_takes_writes_them_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "WRITE_CHUNK", 2)
    student = 990_004
    socks = [Socket(student_id=student, connected_at=float(i)) for i in range(5)]

    async def scenario() -> list[SocketEntry]:
        ids = [await registry.register(s) for s in socks]
        assert None not in ids
        try:
            for n, (sock, socket_id) in enumerate(zip(socks, ids, strict=True)):
                sock.cursor = 10 + n
                registry.touch(socket_id)
            written_by = time.monotonic() + WRITE_BOUND
            while time.monotonic() < written_by:
                found = entries(student)
                if [e.last_sent for e in found] == [10, 11, 12, 13, 14]:
                    return found
                await asyncio.sleep(0.02)
            raise AssertionError(f"not every change written: {[e.last_sent for e in entries(student)]}")
        finally:
            for socket_id in ids:
                if socket_id is not None:
                    await registry.unregister(socket_id, student_id=student)

    found = asyncio.run(scenario())
    assert [e.connected_at for e in found] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert entries(student) == []
