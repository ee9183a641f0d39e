"""The student's event stream: `ws://<host>/ws/events/?token=<key>[&after=<seq>]`.

Contract (see realtime/README.md):

- Authentication: `?token=<key>` or `Authorization: Token <key>`. Without a valid token the socket is
  accepted and immediately closed with 4401; no message is sent before the close. When the token is
  rotated (`student.token_revoked`, delivered by the relay like any event), every socket opened with
  the old one closes with 4401 before anything more is sent; sockets with the new token receive the
  event like any other.
- At most REALTIME_MAX_SOCKETS_PER_STUDENT open sockets per student, counted across every `ws`
  process in the socket registry (realtime/registry.py); one more is closed with 4429.
- `after`: a decimal integer 0 <= after <= the student's last seq. Anything else (not a number,
  negative, repeated, empty, or ahead of the stream) closes with 4400 and a reason. If events after
  the cursor have been purged from the outbox, the socket closes with 4410: refetch the dashboard and
  reconnect with its `seq`.
- Messages: every event as `{"id", "seq", "type", "occurred_at", "data"}`; a client's `{"type": "ping"}`
  is answered with `{"type": "pong"}`. Nothing else is sent. Times (`occurred_at`, and every time in
  `data`) are UTC ISO 8601 with their offset (`+00:00`); the app converts them to the student's zone.
- Event types: `purchase.created`, `trainer.allocated`, `allocation.waitlisted` (`data.reason`:
  `no_capacity` or `no_free_slot`), `sessions.generated` (`data.sessions`: `[{"id", "number",
  "starts_at", "ends_at", "status"}]`), `session.rescheduled` (one session moved by the student or an
  operator: `data.session` as in `sessions.generated`, `data.previous_starts_at`, `data.purchase_id`,
  `data.trainer_id`), `purchase.refunded`, `sessions.cancelled`, `student.resync_requested` (also sent
  when the student's time zone changes). On any of them, refetch the dashboard.

Guarantees, for one connection:

- Only the authenticated student's events (their group is derived from the token, never from input).
- Strictly increasing seq, each event at most once. With `after`, every event after the cursor is
  sent, without a gap: the consumer joins the student's group *before* it reads the database, and
  drops live pushes whose seq it has already sent. Without `after`, the stream starts at the end of
  the student's delivered events (nothing is replayed).
- Read your event: an event is sent from the database only once the relay has delivered it (cache
  invalidated), and live pushes come from the relay after the invalidation; so a refetch on any
  message reflects that message.
- Self-healing: a live push that skips seqs (the channel layer dropped messages for this consumer,
  see `capacity` in settings) is preceded by the missing events read from the database; a `ping`
  also catches up first (at most once a second), covering a dropped last message.
- A client that stops reading is dropped after REALTIME_SEND_TIMEOUT_SECONDS of blocked sending: the
  consumer leaves the group and ends, so it holds no buffer and never slows the relay or other sockets.
  The client reconnects with `after=<last seq it received>`.
"""

import asyncio
import functools
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from kernel.push import PUSH_MESSAGE_TYPE, student_group
from realtime import registry, selectors
from realtime.auth import student_id_for_token, token_from_scope

logger = logging.getLogger(__name__)

BAD_REQUEST = 4400
UNAUTHORIZED = 4401
GONE = 4410
TOO_MANY_SOCKETS = 4429
# Emitted by purchases.services.student_token_revoke when a student's API token is rotated.
TOKEN_REVOKED_EVENT = "student.token_revoked"  # noqa: S105 (an event type, not a secret)

REPLAY_PAGE = 500
PING_CATCH_UP_INTERVAL = 1.0  # seconds
# A message the consumer sends itself, through the channel layer, so that work started by a background
# task (the seam watcher) runs in the consumer's one dispatch loop, serialised with live pushes.
CATCH_UP_MESSAGE_TYPE = "realtime.catch_up"
_CURSOR = re.compile(r"[0-9]{1,19}")
_MAX_SEQ = 2**63 - 1


class BadCursor(ValueError):
    """The `after` query parameter is not a usable cursor."""


@dataclass
class StreamStats:
    """What one connection sent, by source; logged when it closes (and read by the tests)."""

    replayed: int = 0
    repaired: int = 0
    live: int = 0
    duplicates: int = 0


def parse_after(scope: dict[str, Any]) -> int | None:
    """The `after` cursor, or None when absent. Raises `BadCursor` for anything but one decimal integer.

    A malformed cursor is an error rather than 0 or "live only": silently replaying everything, or
    nothing, would hide a client bug and, for "nothing", lose events.
    """
    values = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True).get("after")
    if values is None:
        return None
    if len(values) != 1:
        raise BadCursor("after must be given once")
    value = values[0]
    if not _CURSOR.fullmatch(value) or int(value) > _MAX_SEQ:
        raise BadCursor("after must be a non-negative integer seq")
    return int(value)


def _send_timeout() -> float:
    return float(getattr(settings, "REALTIME_SEND_TIMEOUT_SECONDS", 10.0))


class StudentEventsConsumer(AsyncJsonWebsocketConsumer):
    """One socket of one student. All sending happens in the consumer's dispatch loop (connect, live
    pushes, client pings, catch-up requests), one message at a time, so `cursor` — the seq of the last
    event sent — only grows."""

    student_id: int | None = None
    cursor: int = 0
    joined: bool = False
    closing: bool = False
    last_ping_catch_up: float = float("-inf")
    # What the socket registry reports (realtime/registry.py); times are unix seconds, 0 for never.
    token_key: str = ""
    socket_id: str | None = None
    start_cursor: int = 0
    connected_at: float = 0.0
    last_pong: float = 0.0
    sending_since: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = StreamStats()
        self.tasks: list[asyncio.Task[None]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' `AsyncConsumer.__call__`, with two changes.

        - The reads end however they are cancelled (`_dispatch_forever`): on Python 3.11, a
          cancellation that lands while redis-py opens a connection can be swallowed
          (`asyncio.wait_for`), and Channels then waits forever for the read it cancelled — the
          consumer task never ends (seen after a 4401 refusal: uvicorn's shutdown hung on it).
        - However the connection ends — client gone, a send failing, the client stalled, an error,
          server shutdown — leave the group: a channel left in a group would keep receiving (and the
          channel layer buffering) pushes for nobody until group_expiry.
        """
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        self.base_send = send
        try:
            await self._dispatch_forever(receive)
        except StopConsumer:
            pass
        finally:
            await self._leave()

    async def _dispatch_forever(self, receive: Any) -> None:
        """Channels' `await_many_dispatch` over the client's messages and the channel layer's, one
        message at a time, in arrival order; on the way out each pending read is cancelled until it
        has really ended (`cancel_and_wait`), rather than trusting one cancellation and waiting for
        it. Each read is one task (a live push costs no wrapper task around the layer's read)."""
        sources = (receive, self.channel_receive)
        tasks = [asyncio.ensure_future(source()) for source in sources]
        try:
            while True:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for i, task in enumerate(tasks):
                    if task.done():
                        result = task.result()
                        await self.dispatch(result)
                        tasks[i] = asyncio.ensure_future(sources[i]())
        finally:
            for task in tasks:
                if not task.done():
                    await cancel_and_wait(task)

    # -- connection ------------------------------------------------------------------------------

    async def connect(self) -> None:
        key = token_from_scope(self.scope)
        student_id = await student_id_for_token(key) if key else None
        if student_id is None:
            await self._refuse(UNAUTHORIZED, "authentication required")
            return
        try:
            after = parse_after(self.scope)
        except BadCursor as exc:
            await self._refuse(BAD_REQUEST, str(exc))
            return
        self.student_id, self.token_key, self.connected_at = student_id, key or "", time.time()
        # Take a slot before joining the group: a socket over the cap never receives anything.
        self.socket_id = await registry.register(self)
        if self.socket_id is None:
            await self._refuse(TOO_MANY_SOCKETS, "too many open sockets for this student")
            return
        # Subscribe before reading the database: an event the relay delivers after the read is pushed
        # after the subscription, so it reaches this channel; one delivered before is in the read; one
        # in between is watched (_await_settled). No gap.
        await self.channel_layer.group_add(student_group(student_id), self.channel_name)
        self.joined = True
        position = await database_sync_to_async(selectors.stream_position)(student_id=student_id)
        if after is not None and after > position.last:
            await self._refuse(BAD_REQUEST, f"after={after} is ahead of the stream (last seq {position.last})")
            return
        # A revocation that committed after the token was checked may already be behind the cursor (and
        # would never reach this socket): check again now that live pushes reach it.
        if not await self._token_still_valid():
            await self._refuse(UNAUTHORIZED, "token revoked")
            return
        self.cursor = self.start_cursor = position.delivered if after is None else after
        registry.touch(self.socket_id)
        # Read what a relay holds right now *before* replaying: see _await_settled.
        watched = await database_sync_to_async(selectors.realtime_in_flight)(student_id=student_id, after=self.cursor)
        await self.accept()
        if after is not None:
            hole = await self._catch_up(counter="replayed", refuse_hole=True)
            if hole is not None:
                await self._refuse(GONE, f"events after {after} were purged; refetch the dashboard", accepted=True)
                return
        if watched:
            self.tasks.append(asyncio.create_task(self._await_settled(watched)))
        self.tasks.append(asyncio.create_task(self._refresh_membership()))
        logger.info(
            "stream open student=%s after=%s cursor=%s replayed=%s", student_id, after, self.cursor, self.stats.replayed
        )

    async def disconnect(self, code: int) -> None:
        # Leave at once: the consumer itself ends only after Channels has cancelled its channel-layer
        # read, which with redis-py 8 can take up to the 5 s blocking-read timeout. (__call__'s finally
        # covers endings that never dispatch a disconnect.)
        await self._leave()

    async def _refuse(self, code: int, reason: str, *, accepted: bool = False) -> None:
        # Leave first and send nothing more: a push arriving before the client acknowledges the close
        # must not be sent after it.
        self.closing = True
        await self._leave()
        # Accept, then close: a close before the handshake completes becomes an HTTP 403 and the
        # client would never see the code.
        if not accepted:
            await self.accept()
        await self.close(code=code, reason=reason[:120])

    async def _leave(self) -> None:
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            await cancel_and_wait(task)
        socket_id, self.socket_id = self.socket_id, None
        if socket_id is not None and self.student_id is not None:
            await registry.unregister(socket_id, student_id=self.student_id)
        if self.joined and self.student_id is not None:
            self.joined = False
            try:
                await self.channel_layer.group_discard(student_group(self.student_id), self.channel_name)
            except Exception:  # Redis down: group_expiry removes the channel eventually
                logger.warning("could not leave group of student %s", self.student_id, exc_info=True)
            logger.info(
                "stream closed student=%s cursor=%s replayed=%s repaired=%s live=%s duplicates=%s",
                self.student_id,
                self.cursor,
                self.stats.replayed,
                self.stats.repaired,
                self.stats.live,
                self.stats.duplicates,
            )

    # -- incoming from the channel layer ---------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        # A message type this version does not know (e.g. from a newer relay) must not kill the socket.
        handler_name = str(message.get("type", "")).replace(".", "_")
        handler = getattr(self, handler_name, None) if not handler_name.startswith("_") else None
        if handler is None:
            logger.warning("ignoring message of unknown type %r", message.get("type"))
            return
        # Not Channels' dispatch: it runs close_old_connections() in a worker thread before every message,
        # a thread hop per live push (a tenth of this process's CPU). The database is only used through
        # database_sync_to_async, which does that housekeeping around each of its calls already.
        await handler(message)

    async def outbox_events(self, message: dict[str, Any]) -> None:
        """A live push from the relay: the student's next events, in seq order."""
        events = sorted(message.get("events", []), key=lambda e: int(e["seq"]))
        fresh = [e for e in events if int(e["seq"]) > self.cursor]
        self.stats.duplicates += len(events) - len(fresh)
        if not fresh or self.student_id is None:
            return
        if int(fresh[0]["seq"]) > self.cursor + 1:
            # Pushes for this channel were dropped (capacity) or raced the subscription. The relay pushes
            # a student's events in order, so everything before this push is delivered: read it.
            await self._catch_up(counter="repaired")
        await self._send_events(fresh, counter="live")

    async def realtime_catch_up(self, message: dict[str, Any]) -> None:
        """Requested by the seam watcher: send whatever has been delivered since the cursor."""
        await self._catch_up(counter="repaired")

    # -- incoming from the client ----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        # Only {"type": "ping"} means anything; malformed or unknown input is ignored rather than
        # allowed to raise (which would end the connection with 1011).
        if text_data is None or len(text_data) > 1024:
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            return
        if isinstance(content, dict) and content.get("type") == "ping":
            # Catch up first, so a pong also means "you have everything delivered so far" — at most
            # once a second, so a client pinging in a loop cannot keep the database busy.
            now = asyncio.get_running_loop().time()
            if self.student_id is not None and now - self.last_ping_catch_up >= PING_CATCH_UP_INTERVAL:
                self.last_ping_catch_up = now
                await self._catch_up(counter="repaired")
            await self._send_message({"type": "pong"})
            self.last_pong = time.time()
            registry.touch(self.socket_id)

    # -- sending ---------------------------------------------------------------------------------

    async def _catch_up(self, *, counter: str, refuse_hole: bool = False) -> int | None:
        """Send every delivered event after the cursor, from the database, in order.

        Seqs are gapless, so a first event beyond cursor + 1 means the ones between were purged. With
        `refuse_hole`, nothing is sent then and that first seq is returned (else None).
        """
        assert self.student_id is not None
        while True:
            page = await database_sync_to_async(selectors.delivered_events_after)(
                student_id=self.student_id, after=self.cursor, limit=REPLAY_PAGE
            )
            if refuse_hole and page and int(page[0]["seq"]) > self.cursor + 1:
                return int(page[0]["seq"])
            refuse_hole = False
            await self._send_events(page, counter=counter)
            if len(page) < REPLAY_PAGE:
                return None

    async def _send_events(self, events: list[dict[str, Any]], *, counter: str) -> None:
        for event in events:
            seq = int(event["seq"])
            if seq <= self.cursor:
                self.stats.duplicates += 1
                continue
            if event.get("type") == TOKEN_REVOKED_EVENT and not await self._token_still_valid():
                # Whichever way the event arrives (live, replay, repair), a socket of the old token ends
                # here, before it is sent anything more.
                await self._refuse(UNAUTHORIZED, "token revoked", accepted=True)
                return
            if self.closing:
                return
            await self._send_message(event)
            self.cursor = seq
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        if events:
            registry.touch(self.socket_id)

    async def _token_still_valid(self) -> bool:
        return self.student_id is not None and await student_id_for_token(self.token_key) == self.student_id

    async def _send_message(self, message: dict[str, Any]) -> None:
        """Send one message, or give up on a client that has not read for the send timeout.

        While the client's TCP window and the server's buffers are full, the ASGI send waits. Waiting
        longer would pin this consumer (and the channel layer's buffer for it) for as long as the client
        lingers; dropping it costs the client one reconnect with `after`.
        """
        if self.closing:
            return
        self.sending_since = time.time()
        try:
            async with asyncio.timeout(_send_timeout()):
                await self.send_json(message)
            self.sending_since = 0.0
        except TimeoutError:
            logger.warning(
                "student %s: client stopped reading for %.1fs; dropping the connection at seq %s",
                self.student_id,
                _send_timeout(),
                self.cursor,
            )
            # Ending the consumer is all the ASGI interface allows here: a close frame would wait behind
            # the same full buffer. The server's protocol (realtime/transport.py) then aborts the TCP
            # connection, whose buffer will not drain.
            await self._leave()
            raise StopConsumer from None

    # -- background ------------------------------------------------------------------------------

    async def _await_settled(self, watched: list[selectors.InFlight]) -> None:
        """Cover the one race that subscribe-then-read leaves open.

        A relay may have pushed an event *before* this channel joined the group but not yet marked its
        delivery done when the database was read: then the event was neither received nor read. Its
        delivery was in flight when `connect` looked, just after subscribing. Wait until each such
        delivery has left that claim, then catch up from the database: a done one is read there, one
        handed back or re-claimed is pushed again, to this channel.
        """
        delay = 0.02
        # Bounded by the relay's lease: after it, the delivery is re-claimed and pushed again.
        deadline = asyncio.get_running_loop().time() + float(settings.OUTBOX_LEASE_SECONDS) + 5.0
        try:
            while watched and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                watched = await database_sync_to_async(selectors.still_in_flight)(watched)
            await self.channel_layer.send(self.channel_name, {"type": CATCH_UP_MESSAGE_TYPE})
        except Exception:  # database or Redis trouble: the next push or ping repairs the gap instead
            logger.warning("student %s: seam check failed", self.student_id, exc_info=True)

    async def _refresh_membership(self) -> None:
        """Re-join the group periodically: the channel layer forgets members after `group_expiry`, and a
        connection may well outlive that."""
        interval = max(1.0, float(getattr(self.channel_layer, "group_expiry", 86400)) / 4)
        assert self.student_id is not None
        while True:
            await asyncio.sleep(interval)
            if not self.joined:  # left meanwhile (and this task's cancellation got lost): don't re-join
                return
            try:
                await self.channel_layer.group_add(student_group(self.student_id), self.channel_name)
            except Exception:  # Redis briefly down: try again next round, well before expiry
                logger.warning("could not refresh group membership of student %s", self.student_id, exc_info=True)


async def cancel_and_wait(task: "asyncio.Future[Any]", *, attempts: int = 50) -> None:
    """Cancel `task` and wait for it to end, re-cancelling every 0.1 s: a cancellation can be lost
    (Python 3.11 `asyncio.wait_for`) and a single `await task` would then wait as long as the task runs.
    Gives up, with a warning, after `attempts` rounds."""
    for _ in range(attempts):
        if task.done():
            break
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    if not task.done():
        logger.warning("a background task ignored cancellation: %r", task)
    elif not task.cancelled() and task.exception() is not None:
        logger.warning("background task failed", exc_info=task.exception())


# The relay sends `{"type": PUSH_MESSAGE_TYPE, "events": [...]}`; the handler name must follow it.
assert PUSH_MESSAGE_TYPE.replace(".", "_") == StudentEventsConsumer.outbox_events.__name__
