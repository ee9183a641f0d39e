"""Test helpers for code that emits outbox events (imported by tests only, never by the application).

`deliver_outbox()` (after Sentry's `outbox_runner()`): on exit, every pending event goes through the real
relay step and its handlers run inline, round after round, until nothing is left to deliver.
`capture_events()` (after Zulip's `capture_send_event_calls`): the events emitted inside the block, read
back from the outbox table, not from a mock.

It imports the relay and the Celery task (to run handlers inline), so the domain apps cannot import it:
the import-linter contracts that keep them from the relay's side effects cover it too
(docs/architecture.md).
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from outbox.models import OutboxEvent
from outbox.relay import Relay
from outbox.tasks import run_handler_batch

# A chain of handlers emitting events that trigger handlers settles in a handful of rounds; a chain
# still claiming after this many relay steps loops (a handler emitting for its own event type).
MAX_ROUNDS = 100


class OutboxNotSettled(AssertionError):
    """The outbox still had claimable deliveries after `max_rounds` relay steps."""


@contextlib.contextmanager
def handlers_inline() -> Iterator[None]:
    """Run handler tasks inline, inside the relay's step (Celery's eager mode), then restore the mode."""
    conf = run_handler_batch.app.conf
    previous = conf.task_always_eager
    conf.task_always_eager = True
    try:
        yield
    finally:
        conf.task_always_eager = previous


def deliver_pending(*, max_rounds: int = MAX_ROUNDS) -> int:
    """Deliver every claimable delivery through `Relay.step()` with handlers inline, repeating while
    handlers emit more; returns how many deliveries were claimed.

    Guarantees: on return, no delivery is claimable (failed ones wait for their backoff, as in
    production); raises `OutboxNotSettled` if the outbox is still busy after `max_rounds` steps.
    """
    claimed: list[int] = []

    def bounded(n: int) -> None:  # called after every step that claimed something
        claimed.append(n)
        if len(claimed) >= max_rounds:
            raise OutboxNotSettled(
                f"the outbox did not settle within {max_rounds} relay steps ({sum(claimed)} deliveries "
                "claimed): a handler probably emits an event that triggers itself again"
            )

    with handlers_inline():
        return Relay().drain(every_batch=bounded)


@contextlib.contextmanager
def deliver_outbox(*, max_rounds: int = MAX_ROUNDS) -> Iterator[None]:
    """Run the block, then deliver everything it left pending (see `deliver_pending`). Nothing is
    delivered if the block raises."""
    yield
    deliver_pending(max_rounds=max_rounds)


@dataclass(frozen=True)
class CapturedEvent:
    type: str
    student_id: int
    seq: int
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, Any]
    actor: str
    correlation_id: str


@contextlib.contextmanager
def capture_events() -> Iterator[list[CapturedEvent]]:
    """Yield a list that, when the block exits, holds exactly the events emitted (and visible to this
    connection) inside it, in emission order. Read from the outbox table: nothing is mocked, so the
    events are also delivered as usual."""
    before = set(OutboxEvent.objects.values_list("id", flat=True))
    captured: list[CapturedEvent] = []
    yield captured
    new = OutboxEvent.objects.exclude(id__in=before).order_by("created_at", "student_id", "seq")
    captured.extend(
        CapturedEvent(
            type=e.type,
            student_id=e.student_id,
            seq=e.seq,
            aggregate_type=e.aggregate_type,
            aggregate_id=e.aggregate_id,
            payload=e.payload,
            actor=e.actor,
            correlation_id=e.correlation_id,
        )
        for e in new
    )
