"""The naive chain baseline (benchmark processes only): a purchase's chain without an outbox.

The same domain work as the product's chain, done by the product's own services: allocate a trainer
(`allocation.services.trainer_allocate`), generate the sessions (`sessions_app.services.sessions_generate`),
and after each step invalidate the student's cache and `group_send` the step's event to the student.
What differs is only how the steps are chained: the pattern the outbox replaces,
`transaction.on_commit(task.delay)` and `transaction.on_commit(notify)`, with no event rows, no
deliveries, no relay and no seq.

    webhook (benchmarks.naive) --on_commit--> naive_purchase_created: push purchase.created,
        trainer_allocate --on_commit--> push trainer.allocated, naive_sessions_generate.delay
    naive_sessions_generate: sessions_generate --on_commit--> push sessions.generated

The services call `outbox.services.emit()` inside their transaction. Here (and only in these tasks)
`emit` is replaced by `_emit_on_commit`, which writes nothing and registers the naive follow-up with
`transaction.on_commit` instead, so the follow-up runs right after the service's COMMIT and never for
a rolled-back transaction. The naive database runs without the "no state without its event" triggers
(`benchmarks.naive.disable_event_guards`). Prefork workers run one task at a time per process, so the
replacement never leaks into other work.

Pushes: `{"type": "naive.event", "event": {"type", "occurred_at", "data"}}` to the student's group;
`benchmarks.naive_ws` forwards them to the socket. Each worker process keeps one event loop for the
channel layer (in a thread), so every push reuses the layer's Redis connections, as a careful naive
system would (`async_to_sync` would build a new loop, and so new connections, for every push).
"""

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from allocation import services as allocation
from kernel.push import student_group
from outbox import readcache
from outbox import services as outbox
from outbox.celery_app import app
from outbox.services import Cause
from purchases.models import Purchase
from sessions_app import services as sessions

NAIVE_MESSAGE_TYPE = "naive.event"  # handled by NaiveEventsConsumer.naive_event
ACTOR = "naive-chain"
PUSH_TIMEOUT_SECONDS = 10.0


@app.task(name="bench.naive_purchase_created", ignore_result=True)
def naive_purchase_created(purchase_id: int, student_id: int) -> None:
    """What the naive webhook enqueues after its COMMIT: tell the student, then allocate a trainer."""
    purchase = Purchase.objects.select_related("payment", "course").get(id=purchase_id)
    payment, course = purchase.payment, purchase.course
    notify(
        event_type="purchase.created",
        student_id=student_id,
        payload={
            "purchase_id": purchase.pk,
            "payment_id": payment.provider_payment_id,
            "status": purchase.status,
            "course": {"id": course.pk, "title": course.title},
            "amount": str(payment.amount),
            "currency": payment.currency,
        },
    )
    with _events_on_commit():
        allocation.trainer_allocate(
            purchase_id=purchase_id, cause=Cause(actor=ACTOR, correlation_id=payment.provider_payment_id)
        )


@app.task(name="bench.naive_sessions_generate", ignore_result=True)
def naive_sessions_generate(purchase_id: int) -> None:
    with _events_on_commit():
        sessions.sessions_generate(purchase_id=purchase_id, cause=Cause(actor=ACTOR, correlation_id=str(purchase_id)))


# What runs after a step's COMMIT, by the event the step's service emitted: the next step, if any.
_NEXT: dict[str, Callable[[dict[str, Any]], object]] = {
    "trainer.allocated": lambda payload: naive_sessions_generate.delay(int(payload["purchase_id"])),
}


def _emit_on_commit(*, type: str, student_id: int, payload: dict[str, Any], **_: object) -> None:
    """Stands in for `outbox.services.emit` (called with the same keyword arguments; the aggregate and
    the cause only matter to an event row): after the caller's COMMIT, push the event to the student and
    enqueue the chain's next step."""

    def after_commit() -> None:
        notify(event_type=type, student_id=student_id, payload=payload)
        follow_up = _NEXT.get(type)
        if follow_up is not None:
            follow_up(payload)

    transaction.on_commit(after_commit)


@contextmanager
def _events_on_commit() -> Iterator[None]:
    with mock.patch.object(outbox, "emit", _emit_on_commit):
        yield


def notify(*, event_type: str, student_id: int, payload: dict[str, Any]) -> None:
    """Invalidate the student's cached views and push the event to their sockets (no seq: the naive
    system has none, so the floor stays where it is and the cache is simply dropped)."""
    readcache.invalidate_students({student_id: 0})
    event = {"type": event_type, "occurred_at": timezone.now().isoformat(), "data": payload}
    layer = get_channel_layer()
    assert layer is not None
    _run(layer.group_send(student_group(student_id), {"type": NAIVE_MESSAGE_TYPE, "event": event}))


_loop: tuple[int, asyncio.AbstractEventLoop] | None = None  # (pid, loop): a forked child makes its own
_loop_lock = threading.Lock()


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` on this process's channel-layer event loop and wait for it."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="naive-channel-layer", daemon=True).start()
            _loop = (os.getpid(), loop)
        loop = _loop[1]
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=PUSH_TIMEOUT_SECONDS)
