"""The trace of one student: "why is this student's app stale?" answered in one look.

Read-only; the one selector behind `manage.py trace --student <id>` and the student's admin page. It
gathers the student's stream (last committed seq, the end of what the realtime sink delivered, every
open delivery), the read cache (the cached dashboard's seq against the floor the relay set) and every
open socket from the registry (realtime/registry.py), then names the first thing that keeps the app
from being current, with the next step. Redis being unreachable does not fail the trace: the cache or
socket part then says so.

The verdict is `current` only when the stream is delivered, no handler delivery is open, the cache
holds nothing older than the stream, and every open socket has been sent the whole stream. A student
with no open socket and nothing undelivered is current too (code `no_socket`): there is nothing to
fix on the server, the app catches up when it reconnects.
"""

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis
from django.contrib.auth import get_user_model
from django.utils import timezone

from backoffice.trace import STUCK, DeliveryStep, delivery_steps, duration
from dashboard.selectors import DASHBOARD_VIEW
from outbox import readcache
from outbox.models import Delivery
from outbox.services import REALTIME_SINK
from realtime import registry
from realtime.registry import SocketEntry
from realtime.selectors import stream_position

MAX_OPEN = 50  # open deliveries listed; the verdict needs only the first of each kind


@dataclass(frozen=True)
class OpenDelivery:
    seq: int
    event_type: str
    step: DeliveryStep  # status, attempts, last_error, available_at (next attempt or lease end), note


@dataclass(frozen=True)
class Socket:
    entry: SocketEntry
    behind: int  # events of the stream (last committed seq) not yet sent to it
    blocked_for: float  # seconds its pending send has waited, 0 if none


@dataclass(frozen=True)
class Verdict:
    code: str
    current: bool
    message: str


@dataclass
class StudentTrace:
    student_id: int
    at: datetime
    last_seq: int
    delivered_seq: int
    open_deliveries: list[OpenDelivery] = field(default_factory=list)
    cache_floor: int | None = None
    cache_seq: int | None = None
    cache_error: str = ""
    sockets: list[Socket] = field(default_factory=list)
    sockets_error: str = ""
    verdict: Verdict = Verdict("current", True, "")


def student_trace(*, student_id: int) -> StudentTrace | None:
    """The student's trace with its verdict; None for an unknown student."""
    if not get_user_model().objects.filter(id=student_id).exists():
        return None
    now = timezone.now()
    position = stream_position(student_id=student_id)
    trace = StudentTrace(student_id=student_id, at=now, last_seq=position.last, delivered_seq=position.delivered)
    rows = list(
        Delivery.objects.filter(student_id=student_id)
        .exclude(status=Delivery.Status.DONE)
        .select_related("event")
        .order_by("seq", "sink")[:MAX_OPEN]
    )
    steps = delivery_steps(rows, now=now)
    trace.open_deliveries = [OpenDelivery(d.seq, d.event.type, step) for d, step in zip(rows, steps, strict=True)]
    try:
        trace.cache_floor, trace.cache_seq = readcache.peek(student_id=student_id, view=DASHBOARD_VIEW)
    except redis.RedisError as exc:
        trace.cache_error = f"Redis unreachable: {exc}"
    try:
        entries = registry.student_sockets(student_id=student_id, now=now.timestamp())
    except redis.RedisError as exc:
        trace.sockets_error = f"Redis unreachable: {exc}"
        entries = []
    wall = time.time()
    trace.sockets = [
        Socket(
            entry=e,
            behind=max(position.last - e.last_sent, 0),
            blocked_for=wall - e.send_blocked_since if e.send_blocked_since else 0.0,
        )
        for e in entries
    ]
    trace.verdict = _verdict(trace)
    return trace


def _verdict(t: StudentTrace) -> Verdict:
    realtime = [d for d in t.open_deliveries if d.step.sink == REALTIME_SINK]
    handlers = [d for d in t.open_deliveries if d.step.sink != REALTIME_SINK]
    retry = f"`manage.py outbox retry --student {t.student_id}`"
    if realtime:
        head = realtime[0]
        span = f"#{head.seq}" + (f"..#{t.last_seq}" if t.last_seq > head.seq else "")
        step = head.step
        if step.status == Delivery.Status.DEAD or step.last_error:
            return Verdict(
                "push_failing",
                False,
                f"{span} not pushed: realtime delivery failing since {clock(step.created_at, t.at)} "
                f"({short(step.last_error)}); {step.note}. Run {retry} after the fix.",
            )
        if step.state == STUCK:
            return Verdict("not_delivered", False, f"{span} committed but not pushed: {step.note}")
        return Verdict("delivering", False, f"{span} being delivered: {step.note}")
    failed = [
        d for d in handlers if d.step.status == Delivery.Status.DEAD or d.step.last_error or d.step.state == STUCK
    ]
    if failed:
        d = failed[0]
        return Verdict(
            "handler_stuck",
            False,
            f"the app has the stream up to #{t.last_seq}, but the follow-up of #{d.seq} {d.event_type} did not run "
            f"(what it would emit never comes): {d.step.note}",
        )
    if t.cache_seq is not None and (t.cache_floor or 0) <= t.cache_seq < t.delivered_seq:
        return Verdict(
            "cache_stale",
            False,
            f"the cached dashboard reflects seq {t.cache_seq} but seq {t.delivered_seq} was delivered (floor "
            f"{t.cache_floor}): the cache was not invalidated. Run `manage.py trace --student {t.student_id} --resync`",
        )
    if t.sockets_error:
        return Verdict("sockets_unknown", False, f"stream delivered up to #{t.last_seq}; sockets: {t.sockets_error}")
    stalled = [s for s in t.sockets if s.blocked_for > 0]
    if stalled:
        s = stalled[0]
        silent = duration_s(s.blocked_for)
        return Verdict(
            "socket_stalled",
            False,
            f"socket on {s.entry.process} is {s.behind} events behind and has not read for {silent}: "
            f"it will be dropped after {duration_s(s.entry.send_timeout)} blocked and resume with "
            f"after={s.entry.last_sent}",
        )
    behind = [s for s in t.sockets if s.behind]
    if behind:
        s = behind[0]
        return Verdict(
            "socket_behind",
            False,
            f"socket on {s.entry.process} is at seq {s.entry.last_sent} of {t.last_seq} ({s.behind} behind) and is "
            f"being sent the rest; trace again in a few seconds",
        )
    if handlers:
        d = handlers[0]
        return Verdict("handlers_running", False, f"follow-up of #{d.seq} {d.event_type} in progress: {d.step.note}")
    if not t.sockets:
        return Verdict(
            "no_socket",
            True,
            f"no open socket: everything up to seq {t.last_seq} is delivered; the app catches up from its last "
            f"seq (after=...) when it reconnects",
        )
    return Verdict("current", True, f"current: {len(t.sockets)} socket(s) at seq {t.last_seq} of {t.last_seq}")


def short(error: str, limit: int = 160) -> str:
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    text = lines[-1] if lines else "no error recorded"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def duration_s(seconds: float) -> str:
    return duration(timedelta(seconds=seconds))


def clock(moment: datetime | float, now: datetime) -> str:
    """`21:03:05 UTC (14s ago)` (or `in 3s` for a future moment); `never` for 0."""
    if isinstance(moment, float | int):
        if not moment:
            return "never"
        moment = datetime.fromtimestamp(moment, UTC)
    moment = moment.astimezone(UTC)
    delta = now - moment
    when = f"{duration(delta)} ago" if delta.total_seconds() >= 0 else f"in {duration(-delta)}"
    day = "" if moment.date() == now.astimezone(UTC).date() else f"{moment:%Y-%m-%d} "
    return f"{day}{moment:%H:%M:%S} UTC ({when})"
