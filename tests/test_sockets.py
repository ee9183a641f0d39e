"""Sockets end when they should (issue 13, point 4), through real `ws` (uvicorn) and relay processes:
token revocation closes the old token's sockets on every process, the per-student cap holds across
processes and a killed process frees its slots, 300 sockets closing at once leave no group member
behind, and a client that stops reading has its TCP connection really closed."""

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from django.conf import settings
from websockets.asyncio.client import connect

from tests.support.processes import Processes
from tests.support.sockets import (
    PING_FRAME,
    SMALL_BUFFER,
    manage,
    never_reading_peer,
    registry_entries,
    server_side_state,
)
from tests.support.waiting import wait_until
from tests.support.webhooks import http
from tests.support.ws_client import StreamClient, group_members, tuned_server
from tests.test_realtime import emit, ping, token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def test_a_revoked_token_gets_401_at_once_and_its_sockets_close_4401_on_every_ws_process_within_2s(
    processes: Processes, make_student: Any
) -> None:
    student, bystander = make_student(), make_student()
    ws1, ws2 = processes.server("ws-1"), processes.server("ws-2")
    processes.relay()
    wait_until(lambda: "started" in processes.log("relay"), what="relay up")
    old = token(student)
    with (
        StreamClient(ws1, token=old, after=0) as a,
        StreamClient(ws1, header_token=old) as b,
        StreamClient(ws2, token=old, after=0) as c,
        StreamClient(ws2, token=token(bystander), after=0) as other,
    ):
        wait_until(lambda: len(registry_entries(student.pk)) == 3, what="three sockets registered")
        emit(student)
        a.wait_for_seq(1)
        c.wait_for_seq(1)

        result = manage("revoke_token", str(student.pk), "--json")
        revoked_at = time.monotonic()
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        assert printed == {"student_id": student.pk, "token": printed["token"]}
        new = printed["token"]
        assert new != old

        status, body = http(ws1, "/api/v1/me/dashboard", headers={"Authorization": f"Token {old}"})
        assert status == 401, body
        for client in (a, b, c):
            assert client.closed.wait(max(revoked_at + 2.0 - time.monotonic(), 0)), "old-token socket still open"
        took = time.monotonic() - revoked_at
        print(f"all old-token sockets closed {took:.2f}s after revoke_token returned")
        assert [x.close_code for x in (a, b, c)] == [4401, 4401, 4401]
        # They were sent nothing after the revocation, not even the event that ended them.
        assert [x.seqs() for x in (a, b, c)] == [[1], [1], [1]]
        wait_until(lambda: registry_entries(student.pk) == [], what="their registry entries removed")

        # Another student's socket is untouched; the new token works, and its sockets see the event.
        ping(other)
        assert not other.closed.is_set()
        status, _ = http(ws2, "/api/v1/me/dashboard", headers={"Authorization": f"Token {new}"})
        assert status == 200
        with StreamClient(ws2, token=new, after=0) as fresh:
            fresh.wait_for_seq(2)
            revoked = fresh.events[-1]
            assert (revoked["type"], revoked["data"]) == ("student.token_revoked", {"student_id": student.pk})
            ping(fresh)
            assert not fresh.closed.is_set()


def test_the_socket_cap_holds_across_ws_processes_and_a_killed_process_frees_its_slots(
    processes: Processes, make_student: Any
) -> None:
    student, other = make_student(), make_student()
    env = {"REALTIME_MAX_SOCKETS_PER_STUDENT": "3", "REALTIME_REGISTRY_TTL_SECONDS": "2"}
    ws1, ws2 = processes.server("ws-1", None, **env), processes.server("ws-2", None, **env)
    key = token(student)
    with (
        StreamClient(ws1, token=key) as first,
        StreamClient(ws1, token=key) as second,
        StreamClient(ws2, token=key) as on_ws2,
        StreamClient(ws1, token=token(other)) as others,
    ):
        wait_until(lambda: len(registry_entries(student.pk)) == 3, what="three sockets registered")
        for host in (ws1, ws2):
            with StreamClient(host, token=key) as extra:
                extra.wait_closed()
                assert (extra.close_code, extra.close_reason) == (4429, "too many open sockets for this student")
                assert extra.messages == []
        ping(others)  # the cap is per student

        second.close()  # a closed socket frees its slot at once
        wait_until(lambda: len(registry_entries(student.pk)) == 2, what="slot freed")
        with StreamClient(ws2, token=key) as again:
            ping(again)

        processes.procs["ws-2"].kill()  # kill -9: nothing is unregistered
        processes.procs["ws-2"].wait()
        wait_until(lambda: len(registry_entries(student.pk)) == 1, timeout=15, what="the dead process's entries gone")
        with StreamClient(ws1, token=key) as after_kill, StreamClient(ws1, token=key) as and_another:
            ping(after_kill)
            ping(and_another)
        ping(first)
        assert not on_ws2.errors


def test_300_sockets_closing_at_once_leave_no_group_member_behind(processes: Processes, make_student: Any) -> None:
    """15 students x 20 sockets (the default cap) on one `ws` process whose channel-layer pool has
    only 8 connections: every group_add / group_discard waits for one instead of failing."""
    assert settings.REALTIME_MAX_SOCKETS_PER_STUDENT == 20
    students = [make_student() for _ in range(15)]
    host = processes.server("ws", None, CHANNEL_LAYER_POOL_SIZE="8")

    async def scenario() -> tuple[list[int], int | None]:
        sockets = []
        for s in students:
            url = f"ws://{host}/ws/events/?token={token(s)}"
            sockets += await asyncio.gather(*(connect(url, proxy=None, ping_interval=None) for _ in range(20)))
        await asyncio.to_thread(
            wait_until,
            lambda: all(group_members(s.pk) == 20 for s in students),
            timeout=60,
            what="300 group members",
        )
        async with connect(f"ws://{host}/ws/events/?token={token(students[0])}", proxy=None) as extra:
            await extra.wait_closed()
            refused = extra.close_code
        started = time.monotonic()
        await asyncio.gather(*(ws.close() for ws in sockets))
        print(f"300 closes answered in {time.monotonic() - started:.2f}s")
        return [ws.close_code or 0 for ws in sockets], refused

    codes, refused = asyncio.run(scenario())
    assert refused == 4429
    assert set(codes) == {1000}
    wait_until(lambda: all(group_members(s.pk) == 0 for s in students), timeout=30, what="every group empty")
    assert all(registry_entries(s.pk) == [] for s in students)
    log = processes.log("ws")
    assert "could not leave group" not in log
    assert "Too many connections" not in log


@pytest.mark.parametrize("stall", ["pushed events", "answered pings"])
def test_a_client_that_stops_reading_has_its_tcp_connection_closed(
    processes: Processes, student: Any, stall: str
) -> None:
    """A raw peer that never reads after the handshake, against a real uvicorn `ws` process. Once the
    server's send to it blocks (the registry records when), the server's end of the TCP connection is
    gone within REALTIME_SEND_TIMEOUT_SECONDS + 5 s: not merely logged, not left draining."""
    send_timeout = 5.0
    host = tuned_server(
        processes,
        "ws-stall",
        sndbuf=SMALL_BUFFER,
        REALTIME_SEND_TIMEOUT_SECONDS=str(send_timeout),
        REALTIME_REGISTRY_TTL_SECONDS="2",
    )
    port = int(host.rsplit(":", 1)[1])
    peer = never_reading_peer(host, token(student))
    try:
        assert server_side_state(port, peer) == "01"  # established
        if stall == "pushed events":
            processes.relay()
            emit(student, 800, per_commit=200)  # ~400 fill the buffers in front of the stall
        else:
            threading.Thread(target=_ping_forever, args=(peer,), daemon=True).start()

        def blocked_since() -> float:
            return max((float(e["send_blocked_since"]) for e in registry_entries(student.pk)), default=0.0)

        since = wait_until(blocked_since, timeout=60, what="the server's send to the peer blocked")
        wait_until(
            lambda: server_side_state(port, peer) is None,
            timeout=send_timeout + 20,
            what="the server's end of the TCP connection to be gone",
        )
        took = time.time() - since
        print(f"{stall}: TCP connection closed {took:.1f}s after the server's send blocked")
        assert took <= send_timeout + 5
        log = processes.log("ws-stall")
        assert "client stopped reading" in log and "aborting" in log
        assert registry_entries(student.pk) == []
    finally:
        peer.close()


def _ping_forever(sock: Any) -> None:
    """Send application pings (never reading a pong) until the connection breaks."""
    sock.settimeout(None)
    try:
        while True:
            sock.sendall(PING_FRAME * 200)
    except OSError:
        return
