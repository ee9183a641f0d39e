"""Runs a handler over its deliveries with exactly-once effect.

Each delivery: one transaction that locks the delivery row, writes the inbox row
`(event_id, handler)` and runs the handler (whose service writes state and new events). A redelivered
event finds its inbox row and does nothing. If a delivery fails, that student's later deliveries in
the batch are handed back unattempted, so one student's order is kept and other students go on.
"""

import logging
import time
import traceback

from django.db import connection, transaction
from django.db.models.functions import Now

from outbox import deliveries, metrics, registry
from outbox.models import Delivery

logger = logging.getLogger(__name__)


class _NotNext(Exception):
    """An earlier delivery of the same stream is still open: this one must wait its turn."""


def run_handler_batch(*, sink: str, delivery_ids: list[int]) -> None:
    handler = registry.get(sink)
    blocked: set[int] = set()
    for delivery_id in delivery_ids:
        found = (
            Delivery.objects.filter(id=delivery_id, sink=sink)
            .values_list("student_id", "event_id", "event__correlation_id")
            .first()
        )
        if found is None:
            continue
        student_id, event_id, correlation_id = found
        context = {"delivery_id": delivery_id, "sink": sink, "event_id": event_id, "correlation_id": correlation_id}
        if student_id in blocked:
            deliveries.release([delivery_id])
            continue
        started = time.perf_counter()
        try:
            _run_one(handler=handler, delivery_id=delivery_id)
            metrics.HANDLER_SECONDS.labels(sink).observe(time.perf_counter() - started)
        except _NotNext:
            blocked.add(student_id)
            deliveries.release([delivery_id])
        except Exception as exc:
            blocked.add(student_id)
            metrics.HANDLER_FAILURES.labels(sink).inc()
            logger.exception("handler %s failed on delivery %s", sink, delivery_id, extra=context)
            deliveries.settle_failed(
                [delivery_id], error="".join(traceback.format_exception_only(exc)).strip(), may_dead_letter=True
            )


def _run_one(*, handler: registry.Handler, delivery_id: int) -> None:
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().select_related("event").get(id=delivery_id)
        if delivery.status in (Delivery.Status.DONE, Delivery.Status.DEAD):
            return
        earlier_open = (
            Delivery.objects.filter(sink=delivery.sink, student_id=delivery.student_id, seq__lt=delivery.seq)
            .exclude(status=Delivery.Status.DONE)
            .exists()
        )
        if earlier_open:
            raise _NotNext
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO outbox_inboxentry (event_id, handler, processed_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (event_id, handler) DO NOTHING",
                [delivery.event_id, handler.name],
            )
            first_time = cursor.rowcount == 1
        if first_time:
            handler.func(delivery.event)
        Delivery.objects.filter(id=delivery.id).update(status=Delivery.Status.DONE, last_error="", done_at=Now())
