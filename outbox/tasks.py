"""Celery entry points. Thin: the work is in `outbox.runner`."""

from outbox import runner
from outbox.celery_app import app


@app.task(name="outbox.run_handler_batch", ignore_result=True)
def run_handler_batch(sink: str, delivery_ids: list[int]) -> None:
    """Run one handler over a batch of its deliveries, in the order given (per student seq order)."""
    runner.run_handler_batch(sink=sink, delivery_ids=delivery_ids)
