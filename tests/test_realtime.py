"""The WebSocket stream end to end: a real uvicorn process, the real relay process, the Redis channel
layer and a real WebSocket client (`websockets`). Events are made only through the services.

Nothing here sleeps to synchronise: tests wait for observable states (a seq received, a delivery
done, a group membership, a log line) with a timeout.
"""

import asyncio
import json
import re
import signal
import socket
import statistics
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer
from django.contrib.auth import get_user_model
from django.db import transaction

from outbox.models import Delivery, OutboxEvent
from purchases.models import Course
from purchases.services import purchase_create, student_resync_request
from tests.support.processes import Processes
from tests.support.trainers import available_trainer
from tests.support.waiting import wait_until
from tests.support.ws_client import StreamClient, gaps, group_members, tuned_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

# A slow client's TCP window closes after a few KiB when both ends use small socket buffers; see
# tests/support/ws_server.py. The server's own write buffer (uvicorn/asyncio: 64 KiB) still comes first.
SMALL_BUFFER = 4096
EVENT_FIELDS = {"id", "seq", "type", "occurred_at", "data"}
IDLE_RECEIVE_SECONDS = RedisChannelLayer.brpop_timeout


@dataclass
class Stack:
    host: str
    procs: Processes


@pytest.fixture(scope="module")
def stack(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One ASGI server and one relay for the module (each test starts from empty tables and Redis)."""
    procs = Processes(tmp_path_factory.mktemp("realtime"))
    try:
        host = procs.server("web")
        procs.relay("relay")
        wait_until(lambda: "started" in procs.log("relay"), what="relay up")
        yield Stack(host=host, procs=procs)
    finally:
        procs.stop_all()


# -- helpers --------------------------------------------------------------------------------------


def emit(student: Any, count: int = 1, *, per_commit: int = 1) -> None:
    """`count` student.resync_requested events through the service, `per_commit` per transaction."""
    for start in range(0, count, per_commit):
        with transaction.atomic():
            for _ in range(min(per_commit, count - start)):
                student_resync_request(student_id=student.pk, actor="test")


def delivered(student: Any) -> int:
    """How many of the student's events the relay has delivered (invalidated and pushed)."""
    return Delivery.objects.filter(sink="realtime", student_id=student.pk, status="done").count()


def wait_delivered(student: Any, count: int, *, timeout: float = 30) -> None:
    wait_until(lambda: delivered(student) >= count, timeout=timeout, what=f"{count} events delivered")


def ping(client: StreamClient) -> None:
    """Send an application ping and wait for its pong."""
    pongs = client.messages.count({"type": "pong"})
    client.send({"type": "ping"})
    wait_until(lambda: client.messages.count({"type": "pong"}) > pongs, what="pong")


def token(student: Any) -> str:
    return str(student.auth_token.key)


_CLOSED = re.compile(
    r"stream closed student=(?P<student>\d+) cursor=(?P<cursor>\d+) replayed=(?P<replayed>\d+) "
    r"repaired=(?P<repaired>\d+) live=(?P<live>\d+) duplicates=(?P<duplicates>\d+)"
)


def closed_stats(procs: Processes, name: str, student: Any) -> list[dict[str, int]]:
    """The consumer's own account of each closed connection of `student` (from the server log)."""
    return [
        {k: int(v) for k, v in m.groupdict().items()}
        for m in _CLOSED.finditer(procs.log(name))
        if int(m["student"]) == student.pk
    ]


# -- authentication -------------------------------------------------------------------------------


def test_without_a_valid_token_the_socket_closes_4401_before_anything_is_sent(stack: Stack, make_student: Any) -> None:
    student = make_student()
    inactive = make_student()
    get_user_model().objects.filter(pk=inactive.pk).update(is_active=False)
    emit(student, 2)
    wait_delivered(student, 2)

    refused = {
        "no token": StreamClient(stack.host),
        "unknown token": StreamClient(stack.host, token="0" * 40),
        "unknown header token": StreamClient(stack.host, header_token="0" * 40),
        "malformed header": StreamClient(stack.host, query={}, header_token=f"{token(student)} extra"),
        "inactive user": StreamClient(stack.host, token=token(inactive)),
        "no token, with a cursor": StreamClient(stack.host, after=0),
    }
    for what, client in refused.items():
        with client:
            client.wait_closed()
            assert client.handshake_error is None, what  # a close code, not an HTTP 403
            assert (client.close_code, client.messages) == (4401, []), what

    for client in (
        StreamClient(stack.host, header_token=token(student), after=0),
        StreamClient(stack.host, token=token(student), after=0),
    ):
        with client:
            client.wait_for_seq(2)
            assert client.seqs() == [1, 2]

    # The query-string token reached uvicorn's handshake log line, redacted.
    log = stack.procs.log("web")
    assert "/ws/events/?token=[redacted]" in log
    assert token(student) not in log and token(inactive) not in log


def test_a_bad_after_is_refused_with_4400_and_a_reason(stack: Stack, student: Any) -> None:
    emit(student, 3)
    wait_delivered(student, 3)
    for raw in ("abc", "-1", "1.5", "", " 1", "0x10", "99999999999999999999", "4"):
        with StreamClient(stack.host, token=token(student), query={"after": raw}) as client:
            client.wait_closed()
            assert (client.close_code, client.messages) == (4400, []), raw
            assert "after" in client.close_reason, raw
    with StreamClient(stack.host, token=token(student), query="after=1&after=2") as client:
        client.wait_closed()
        assert client.close_code == 4400
    # "4" is ahead of the stream (last seq 3): a cursor from another database, not a client's state.
    with StreamClient(stack.host, token=token(student), after=3) as client:
        client.send({"type": "ping"})
        wait_until(lambda: client.messages == [{"type": "pong"}], what="pong")


# -- isolation and replay -------------------------------------------------------------------------


def test_a_student_receives_only_their_own_events(stack: Stack, make_student: Any) -> None:
    alice, bob = make_student(), make_student()
    with (
        StreamClient(stack.host, token=token(alice), after=0) as a,
        StreamClient(stack.host, header_token=token(bob), after=0) as b,
    ):
        wait_until(lambda: group_members(alice.pk) == 1 and group_members(bob.pk) == 1, what="both subscribed")
        for _ in range(5):
            emit(alice)
            emit(bob, 2)
        a.wait_for_seq(5)
        b.wait_for_seq(10)
        wait_delivered(alice, 5)
        wait_delivered(bob, 10)
        for client in (a, b):
            ping(client)  # a pong follows a catch-up: nothing delivered is still on its way

    for who, client in ((alice, a), (bob, b)):
        own = {str(i) for i in OutboxEvent.objects.filter(student_id=who.pk).values_list("id", flat=True)}
        assert {e["id"] for e in client.events} == own
        assert client.seqs() == list(range(1, len(own) + 1))
        assert all(e["data"] == {"student_id": who.pk} for e in client.events)


def test_after_replays_every_later_event_then_streams_live_ones(stack: Stack, student: Any) -> None:
    emit(student, 10, per_commit=5)
    wait_delivered(student, 10)

    with StreamClient(stack.host, token=token(student), after=4) as client:
        client.wait_for_seq(10)
        assert client.seqs() == [5, 6, 7, 8, 9, 10]
        emit(student, 2)
        client.wait_for_seq(12)
        assert client.seqs() == list(range(5, 13))

    stored = {str(e.id): e for e in OutboxEvent.objects.filter(student_id=student.pk)}
    for message in client.events:
        assert set(message) == EVENT_FIELDS
        event = stored[message["id"]]
        assert (message["seq"], message["type"], message["data"]) == (event.seq, event.type, event.payload)
        assert message["occurred_at"] == event.created_at.isoformat()

    with StreamClient(stack.host, token=token(student), after=12) as up_to_date:
        emit(student)
        up_to_date.wait_for_seq(13)
        assert up_to_date.seqs() == [13]  # nothing replayed: it had everything

    with StreamClient(stack.host, token=token(student)) as live_only:
        wait_until(lambda: group_members(student.pk) == 1, what="subscribed")
        emit(student)
        live_only.wait_for_seq(14)
        assert live_only.seqs() == [14]  # without a cursor: from now on

    with StreamClient(stack.host, token=token(student), after=0) as everything:
        everything.wait_for_seq(14)
        assert everything.seqs() == list(range(1, 15))


def test_events_emitted_while_a_replay_runs_arrive_exactly_once_in_order(
    processes: Processes, stack: Stack, student: Any
) -> None:
    """The seam, made certain rather than lucky: the client does not read, so the server's replay of
    a backlog far larger than the socket buffers is stuck mid-way while new events are committed,
    delivered and pushed to its channel. They are then both in the database (read by the replay's
    later pages) and queued live: each must still arrive once, in order."""
    backlog, during, after_replay = 1000, 50, 50
    host = tuned_server(processes, "web-seam", sndbuf=SMALL_BUFFER, REALTIME_SEND_TIMEOUT_SECONDS="120")
    emit(student, backlog, per_commit=500)
    wait_delivered(student, backlog)

    with StreamClient(host, token=token(student), after=0, reading=False, rcvbuf=SMALL_BUFFER) as client:
        wait_until(lambda: group_members(student.pk) == 1, what="subscribed")  # joins before replaying
        emit(student, during)  # one transaction each, like real traffic
        wait_delivered(student, backlog + during)  # pushed to the group: queued behind the replay
        client.resume_reading()
        emit(student, after_replay)
        total = backlog + during + after_replay
        client.wait_for_seq(total)
        assert client.seqs() == list(range(1, total + 1))
        assert gaps(client.seqs()) == []

    wait_until(lambda: closed_stats(processes, "web-seam", student), what="the consumer's close log")
    (stats,) = closed_stats(processes, "web-seam", student)
    # The replay was still running when the `during` events were delivered (it sent them), and their
    # live pushes reached the consumer and were dropped as already sent: the seam was exercised.
    assert stats["replayed"] >= backlog + during
    assert stats["duplicates"] >= during
    assert stats["replayed"] + stats["repaired"] + stats["live"] == total


# -- read your event ------------------------------------------------------------------------------


def http_json(url: str, token_key: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token_key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def reflects(dashboard: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether the dashboard shows the state the event announces."""
    data = event["data"]
    purchase = next((p for p in dashboard["purchases"] if p["id"] == data.get("purchase_id")), None)
    if event["type"] == "purchase.created":
        return purchase is not None
    if event["type"] == "trainer.allocated":
        return purchase is not None and purchase["trainer"] == data["trainer"]
    if event["type"] == "sessions.generated":
        return purchase is not None and {s["id"] for s in purchase["sessions"]} >= {s["id"] for s in data["sessions"]}
    return True


def test_a_refetch_on_every_push_reflects_that_push(
    processes: Processes, stack: Stack, student: Any, course: Course
) -> None:
    """Invariant 5 through real processes: under a stream of purchases, while another reader keeps
    refilling the dashboard cache, a client that refetches the dashboard on each event never reads a
    view older than the event."""
    available_trainer(name="Big", capacity=10_000)
    processes.worker()
    purchases = 15
    base = f"http://{stack.host}/api/v1/me/dashboard"
    key = token(student)
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def refetch(event: dict[str, Any]) -> None:
        seen.append((event, await asyncio.to_thread(http_json, base, key)))

    stop = threading.Event()

    def hammer() -> None:  # races the relay: refills the cache with whatever it reads
        while not stop.is_set():
            http_json(base, key)

    filler = threading.Thread(target=hammer, daemon=True)
    with StreamClient(stack.host, token=key, after=http_json(base, key)["seq"], on_event=refetch) as client:
        filler.start()
        try:
            for i in range(purchases):
                purchase_create(
                    payment_id=f"pay_ryw_{i}",
                    student_id=student.pk,
                    course_id=course.pk,
                    amount=Decimal("1"),
                    currency="EUR",
                    actor="test",
                )
            client.wait_for_seq(3 * purchases, timeout=60)
        finally:
            stop.set()
            filler.join(10)

    assert client.seqs() == list(range(1, 3 * purchases + 1))
    assert len(seen) == 3 * purchases
    stale = [(e["seq"], d["seq"]) for e, d in seen if d["seq"] < e["seq"] or not reflects(d, e)]
    assert stale == []


# -- slow and dead clients ------------------------------------------------------------------------


def test_a_client_that_stops_reading_delays_no_one_and_recovers_with_after(
    processes: Processes, stack: Stack, student: Any
) -> None:
    """Two sockets of one student, so the relay's one group_send goes to both. The slow one never
    reads: its server-side sends back up, and after the send timeout the server drops it. Meanwhile
    the other receives every event promptly and the relay never fails or retries. Then the slow
    client reads what it had, sees the connection end, and resumes with after=<its last seq>."""
    send_timeout = 2.0
    host = tuned_server(processes, "web-slow", sndbuf=SMALL_BUFFER, REALTIME_SEND_TIMEOUT_SECONDS=str(send_timeout))
    total = 1200  # ~200 KB of messages: several times what the buffers in front of a stall hold
    with (
        StreamClient(host, token=token(student), after=0, reading=False, rcvbuf=SMALL_BUFFER) as slow,
        StreamClient(host, token=token(student), after=0) as fast,
    ):
        wait_until(lambda: group_members(student.pk) == 2, what="both subscribed")
        emit(student, total, per_commit=4)  # a stream: 300 commits, pushed as they come
        fast.wait_for_seq(total, timeout=60)
        wait_until(lambda: group_members(student.pk) == 1, timeout=30, what="the slow client dropped")
        assert "client stopped reading" in processes.log("web-slow")

        assert fast.seqs() == list(range(1, total + 1))
        stored = dict(OutboxEvent.objects.filter(student_id=student.pk).values_list("seq", "created_at"))
        latency = sorted(fast.arrival(seq) - stored[seq].timestamp() for seq in range(1, total + 1))
        figures = {
            "p50": statistics.median(latency),
            "p99": latency[int(len(latency) * 0.99) - 1],
            "max": latency[-1],
        }
        print(f"fast client latency while the slow one stalled: {figures}")
        # Had the stalled socket held anything up, events would wait for the send timeout.
        assert figures["max"] < send_timeout / 2, figures

        realtime = Delivery.objects.filter(sink="realtime", student_id=student.pk)
        assert realtime.count() == total
        assert set(realtime.values_list("status", "attempts", "last_error")) == {("done", 1, "")}

        slow.resume_reading()
        slow.wait_closed(timeout=30)
        assert slow.close_code == 1006  # no close frame could get past the full buffer
        received = slow.seqs()
        assert received and gaps(received) == [] and received[0] == 1
        assert received[-1] < total  # it really missed messages
    with StreamClient(host, token=token(student), after=received[-1]) as resumed:
        resumed.wait_for_seq(total)
        assert received + resumed.seqs() == list(range(1, total + 1))


def test_dead_peers_are_dropped_by_the_protocol_keepalive(processes: Processes, stack: Stack, student: Any) -> None:
    """uvicorn pings every socket (--ws-ping-interval) and closes one that does not answer within
    --ws-ping-timeout; the consumer then leaves the group. A peer that answers stays connected."""
    host = tuned_server(processes, "web-ping", ping_interval=0.3, ping_timeout=0.3)
    dead = raw_handshake(host, token(student))  # completes the handshake, then never reads a byte
    try:
        with StreamClient(host, token=token(student), after=0) as alive:
            wait_until(lambda: group_members(student.pk) == 2, what="both subscribed")
            wait_until(lambda: group_members(student.pk) == 1, timeout=10, what="the dead peer dropped")
            frames = read_until_eof(dead, timeout=5)
            assert b"keepalive ping timeout" in frames  # uvicorn's close reason (code 1011)
            # The live one answers every ping. It also outlives the channel layer's idle receive (a
            # 5 s BZPOPMIN, which redis-py 8 would cut with its default 5 s socket timeout: 1011).
            assert not alive.closed.wait(IDLE_RECEIVE_SECONDS + 1.5), (alive.close_code, alive.close_reason)
            emit(student)
            alive.wait_for_seq(1)
    finally:
        dead.close()


def test_every_connection_task_ends_so_the_server_can_shut_down(processes: Processes, student: Any) -> None:
    """uvicorn's graceful shutdown waits for every connection's task. A consumer whose channel-layer
    read swallowed its cancellation (Python 3.11 + redis-py, see StudentEventsConsumer.__call__)
    would never end: a leaked task per short-lived connection, and a server that never stops."""
    host = processes.server("web-exit")
    for _ in range(5):
        with StreamClient(host) as refused:
            refused.wait_closed()
    with StreamClient(host, token=token(student), after=0) as client:
        ping(client)
    server = processes.procs["web-exit"]
    server.send_signal(signal.SIGTERM)
    wait_until(lambda: server.poll() is not None, timeout=8, what="the server to exit")
    assert "Exception in ASGI application" not in processes.log("web-exit")


def test_application_ping_gets_a_pong_and_junk_is_ignored(stack: Stack, student: Any) -> None:
    with StreamClient(stack.host, token=token(student)) as client:
        client.send_raw("not json")
        client.send_raw(b"\x00binary")
        client.send({"type": "subscribe", "group": "student.1"})  # no such thing; ignored
        client.send({"type": "ping"})
        wait_until(lambda: client.messages == [{"type": "pong"}], what="pong")
        emit(student)
        client.wait_for_seq(1)
        assert not client.closed.is_set()


# -- raw socket peer ------------------------------------------------------------------------------


def raw_handshake(host: str, key: str) -> Any:
    """A WebSocket peer that completes the opening handshake and then never reads or answers."""
    address, port = host.rsplit(":", 1)
    sock = socket.create_connection((address, int(port)), timeout=10)
    sock.sendall(
        (
            f"GET /ws/events/?token={key} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, "server closed during the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def read_until_eof(sock: Any, *, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data
