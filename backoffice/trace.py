"""The trace of one payment: its whole chain of events, each delivery's state, and a verdict.

Read-only. It answers "why didn't the student's app update?" in one look, and is the one selector
behind `manage.py trace <payment_id>` and the admin's timeline page. A chain is every event whose
correlation id is the payment id (`purchase.created`, what its handlers emitted, a later refund...).

The verdict names the delivery that matters most (dead > failing > stuck > in progress) with its
cause and the operator's next step. Extra queries run only for open deliveries and use the partial
indexes on open deliveries, never a scan of the delivered history.
"""

from collections.abc import Collection
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from django.db.models import Max
from django.utils import timezone

from outbox import registry
from outbox.deliveries import PARKED_UNTIL
from outbox.models import RELAY_ALIVE_WITHIN, Delivery, OutboxEvent, RelayHeartbeat
from outbox.services import REALTIME_SINK

State = Literal["delivered", "in_progress", "stuck"]
DELIVERED: State = "delivered"
IN_PROGRESS: State = "in_progress"
STUCK: State = "stuck"

# A delivery nobody claimed for this long means no relay is working on it (the relay is woken by
# NOTIFY at COMMIT and polls every second, so a healthy one claims within milliseconds).
UNCLAIMED_GRACE = timedelta(seconds=5)
# How many of the newest deliveries to look at for "has any relay claimed anything lately?".
RECENT_DELIVERIES = 500
MAX_EVENTS = 500
_SEVERITY = {STUCK: 0, IN_PROGRESS: 1, DELIVERED: 2}


@dataclass(frozen=True)
class DeliveryStep:
    id: int
    sink: str
    status: str
    attempts: int
    last_error: str
    created_at: datetime
    available_at: datetime
    claimed_by: str
    claimed_at: datetime | None
    done_at: datetime | None
    state: State
    note: str  # this delivery's state in plain words (with its cause and next step if open)


# A step's fields are its delivery's columns of the same name, but for what the trace works out.
_DELIVERY_COLUMNS = tuple(f.name for f in fields(DeliveryStep) if f.name not in {"state", "note"})


@dataclass(frozen=True)
class EventStep:
    id: UUID
    seq: int
    type: str
    actor: str
    student_id: int
    causation_id: UUID | None
    caused_by: str  # "#1 purchase.created", or "" for the chain's first event / an outside cause
    created_at: datetime
    deliveries: list[DeliveryStep]


@dataclass(frozen=True)
class Verdict:
    state: State
    message: str


@dataclass(frozen=True)
class Trace:
    payment_id: str
    events: list[EventStep]
    verdict: Verdict
    at: datetime


def trace_json(trace: Trace) -> dict[str, Any]:
    """The trace as `trace --json` prints it: the steps' and the verdict's fields (datetimes in ISO 8601,
    ids as strings), but for an event's `caused_by` and a delivery's `created_at` and `claimed_at`."""
    return {
        "payment_id": trace.payment_id,
        "verdict": _as_json(trace.verdict),
        "events": [
            {
                **_as_json(e, leave_out={"caused_by", "deliveries"}),
                "deliveries": [_as_json(d, leave_out={"created_at", "claimed_at"}) for d in e.deliveries],
            }
            for e in trace.events
        ],
    }


def _as_json(step: EventStep | DeliveryStep | Verdict, *, leave_out: Collection[str] = ()) -> dict[str, Any]:
    return {f.name: _json_value(getattr(step, f.name)) for f in fields(step) if f.name not in leave_out}


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if isinstance(value, UUID) else value


def payment_trace(*, payment_id: str, now: datetime | None = None) -> Trace | None:
    """The payment's chain in (student, seq) order with a verdict; None if it has no events
    (unknown payment, or purged history)."""
    now = now or timezone.now()
    events = list(
        OutboxEvent.objects.filter(correlation_id=payment_id)
        .prefetch_related("deliveries")
        .order_by("student_id", "seq")[:MAX_EVENTS]
    )
    if not events:
        return None
    by_id = {e.id: e for e in events}
    context = _Context(now=now)
    steps = []
    for event in events:
        cause = by_id.get(event.causation_id) if event.causation_id else None
        deliveries = sorted(event.deliveries.all(), key=lambda d: (d.sink != REALTIME_SINK, d.sink))
        steps.append(
            EventStep(
                id=event.id,
                seq=event.seq,
                type=event.type,
                actor=event.actor,
                student_id=event.student_id,
                causation_id=event.causation_id,
                caused_by=f"#{cause.seq} {cause.type}" if cause else "",
                created_at=event.created_at,
                deliveries=[_step(event, d, context) for d in deliveries],
            )
        )
    return Trace(payment_id=payment_id, events=steps, verdict=_verdict(steps), at=now)


def _verdict(events: list[EventStep]) -> Verdict:
    open_steps = [(e, d) for e in events for d in e.deliveries if d.state != DELIVERED]
    if not open_steps:
        last = events[-1]
        outcome = registry.outcome_of(last.type)
        return Verdict(
            DELIVERED,
            f"Everything delivered: the student's cached views were invalidated and their app was pushed all "
            f"{len(events)} event(s), up to #{last.seq} {last.type}" + (f"; {outcome}." if outcome else "."),
        )
    # The most severe open delivery, earliest first: it is what the student is waiting for.
    event, step = min(open_steps, key=lambda s: (_SEVERITY[s[1].state], s[0].seq, s[1].sink != REALTIME_SINK))
    return Verdict(step.state, f"#{event.seq} {event.type} -> {step.note}")


class _Context:
    """Lazily computed facts about the relays, shared by all deliveries of one trace."""

    def __init__(self, *, now: datetime) -> None:
        self.now = now
        self._last_claim: datetime | None = None
        self._last_claim_known = False
        self._beat: RelayHeartbeat | None = None
        self._beat_known = False

    def heartbeat(self) -> RelayHeartbeat | None:
        """The most recent relay heartbeat (relays beat in `run_relay`, not in `--once`)."""
        if not self._beat_known:
            self._beat = RelayHeartbeat.objects.order_by("-beat_at").first()
            self._beat_known = True
        return self._beat

    def no_relay_hint(self) -> str:
        """Why nobody claims: no relay alive, or a live one that claims nothing."""
        beat = self.heartbeat()
        if beat is not None and self.now - beat.beat_at < RELAY_ALIVE_WITHIN:
            return (
                f": relay {beat.relay_id} is alive (beat {duration(self.now - beat.beat_at)} ago) "
                f"but claims nothing: is it stuck? (see its log)"
            )
        last = (
            f"last relay heartbeat {duration(self.now - beat.beat_at)} ago from {beat.relay_id}"
            if beat
            else "no relay heartbeat on record"
        )
        return f": is `manage.py run_relay` running? ({last})"

    def last_claim(self) -> datetime | None:
        """When a relay last claimed anything: over the newest deliveries (pk index) and the open
        in-flight ones (partial index), so a relay working through an old backlog counts too."""
        if not self._last_claim_known:
            recent = Delivery.objects.order_by("-id").values_list("claimed_at", flat=True)[:RECENT_DELIVERIES]
            in_flight = Delivery.objects.filter(status=Delivery.Status.IN_FLIGHT).aggregate(m=Max("claimed_at"))["m"]
            self._last_claim = max([c for c in [*recent, in_flight] if c is not None], default=None)
            self._last_claim_known = True
        return self._last_claim


def delivery_steps(deliveries: list[Delivery], *, now: datetime) -> list[DeliveryStep]:
    """Each delivery as the payment trace shows it, with its state and note (for `trace --student`).
    The deliveries need their `event` loaded."""
    context = _Context(now=now)
    return [_step(d.event, d, context) for d in deliveries]


def _step(event: OutboxEvent, d: Delivery, context: _Context) -> DeliveryStep:
    state, note = _explain(event, d, context)
    return DeliveryStep(**{name: getattr(d, name) for name in _DELIVERY_COLUMNS}, state=state, note=note)


def _explain(event: OutboxEvent, d: Delivery, context: _Context) -> tuple[State, str]:
    now, label = context.now, _label(d.sink)
    error = _short(d.last_error)
    if d.status == Delivery.Status.DONE:
        took = f" in {duration(d.done_at - d.created_at)}" if d.done_at else ""
        return DELIVERED, f"{label}: done{took}"
    if d.status == Delivery.Status.DEAD:
        return STUCK, (
            f"dead-lettered: {label} failed {_times(d.attempts)}: {error}. "
            f"Fix the cause, then run `manage.py outbox retry --id {d.pk}`"
        )
    if d.status == Delivery.Status.IN_FLIGHT:
        holder = f"relay {d.claimed_by}" if d.claimed_by else "a relay"
        if d.available_at > now:
            where = "handed to a Celery worker by " if d.sink != REALTIME_SINK else "in flight on "
            return IN_PROGRESS, f"{label}: {where}{holder}, lease expires in {duration(d.available_at - now)}"
        expired = now - d.available_at
        why = "the relay died mid-delivery?" if d.sink == REALTIME_SINK else "is a Celery worker running? Or it died"
        text = (
            f"{label}: in flight on {holder}, but its lease expired {duration(expired)} ago ({why}); "
            f"the next claim retries it"
        )
        return (STUCK if expired > UNCLAIMED_GRACE else IN_PROGRESS), text + _relay_hint(d.available_at, context)
    # Pending.
    if d.attempts > 0 and d.last_error:
        failed = f"{label} failed {_times(d.attempts)}: {error}"
        if d.available_at > now:
            return STUCK, f"{failed}; next retry in {duration(d.available_at - now)}"
        return STUCK, f"{failed}; retry due {duration(now - d.available_at)} ago" + _relay_hint(d.available_at, context)
    if now < d.available_at < PARKED_UNTIL:
        return IN_PROGRESS, f"{label}: pending, due in {duration(d.available_at - now)}"
    blocker = (
        Delivery.objects.filter(sink=d.sink, student_id=d.student_id, seq__lt=d.seq)
        .exclude(status=Delivery.Status.DONE)
        .select_related("event")
        .order_by("seq")
        .first()
    )
    if blocker is not None:
        state, why = _explain(blocker.event, blocker, context)
        other = (
            "" if blocker.event.correlation_id == event.correlation_id else f", payment {blocker.event.correlation_id}"
        )
        return state, (
            f"{label}: waiting behind this student's #{blocker.seq} {blocker.event.type}{other} "
            f"(per-student order), which is: {why}"
        )
    waiting = now - d.available_at
    last_claim = context.last_claim()
    if last_claim is None or last_claim < d.available_at:
        since = (
            "since it was emitted" if last_claim is None else f"since the last claim {duration(now - last_claim)} ago"
        )
        text = f"{label}: pending for {duration(waiting)} and no relay has claimed anything {since}"
        if waiting >= UNCLAIMED_GRACE:
            return STUCK, text + context.no_relay_hint()
        return IN_PROGRESS, f"{text} (if this lasts: is `manage.py run_relay` running?)"
    due = Delivery.objects.filter(sink=d.sink, status=Delivery.Status.PENDING, available_at__lte=now).count()
    state = STUCK if waiting >= UNCLAIMED_GRACE else IN_PROGRESS
    return state, (
        f"{label}: due for {duration(waiting)}; relays are claiming (last {duration(now - last_claim)} ago) but "
        f"have not reached it: {due} due deliveries on this sink (see `manage.py outbox status`)"
    )


def _relay_hint(due_since: datetime, context: _Context) -> str:
    last_claim = context.last_claim()
    if last_claim is None or last_claim < due_since:
        return "; no relay has claimed anything since" + context.no_relay_hint()
    return ""


def _label(sink: str) -> str:
    return "realtime (cache invalidation + push to the app)" if sink == REALTIME_SINK else sink


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _short(error: str, limit: int = 300) -> str:
    """The last line of an error (a traceback's message), shortened."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    text = lines[-1].strip() if lines else "(no error recorded)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def duration(delta: timedelta) -> str:
    """`0.3s`, `12s`, `4m 05s`, `2h 10m`, `3d 4h`."""
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
