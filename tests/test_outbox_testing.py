"""The outbox test helpers: `deliver_outbox()` settles a chain or says it does not; `capture_events()`
sees exactly the events emitted inside it."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction

from outbox import registry
from outbox.models import Delivery, OutboxEvent
from outbox.services import Cause, emit
from outbox.testing import OutboxNotSettled, capture_events, deliver_outbox
from purchases.models import Course
from tests.support.purchases import buy

pytestmark = pytest.mark.django_db(transaction=True)

LOOP_TYPE = "test.loops"


def _emit_loop(*, student_id: int, cause: Cause) -> None:
    with transaction.atomic():
        emit(type=LOOP_TYPE, student_id=student_id, aggregate_type="test", aggregate_id=1, payload={}, cause=cause)


@pytest.fixture
def looping_handler() -> Iterator[None]:
    """A handler that emits the event it handles: a chain that never settles."""

    def again(event: OutboxEvent) -> None:
        _emit_loop(student_id=event.student_id, cause=Cause.from_event(event, actor="test:loop"))

    registry.handles(LOOP_TYPE, name="test.loop_again")(again)
    yield
    registry._by_name.pop("test.loop_again")


def test_a_chain_of_handlers_settles(student: Any, course: Course, trainer: Any) -> None:
    with deliver_outbox():
        buy(student, course, "pay_chain")
    types = list(OutboxEvent.objects.order_by("seq").values_list("type", flat=True))
    assert types[:2] == ["purchase.created", "trainer.allocated"] and len(types) > 2
    assert not Delivery.objects.exclude(status="done").exists()


def test_a_chain_that_never_settles_raises(student: Any, looping_handler: None) -> None:
    with pytest.raises(OutboxNotSettled, match="did not settle within 5 relay steps"), deliver_outbox(max_rounds=5):
        _emit_loop(student_id=student.pk, cause=Cause(actor="test", correlation_id="loop"))


def test_nothing_is_delivered_when_the_block_raises(student: Any, course: Course, trainer: Any) -> None:
    with pytest.raises(RuntimeError), deliver_outbox():
        buy(student, course, "pay_raise")
        raise RuntimeError("boom")
    assert not Delivery.objects.filter(status="done").exists()


def test_capture_sees_exactly_the_events_emitted_inside(student: Any, course: Course, trainer: Any) -> None:
    buy(student, course, "pay_before")  # emitted before: not captured
    with capture_events() as events:
        buy(student, course, "pay_inside")
        assert events == []  # filled when the block exits
    assert [(e.type, e.aggregate_type, e.payload["payment_id"]) for e in events] == [
        ("purchase.created", "purchase", "pay_inside")
    ]
    assert events[0].student_id == student.pk and events[0].correlation_id == "pay_inside"


def test_capture_sees_the_events_handlers_emit(student: Any, course: Course, trainer: Any) -> None:
    with capture_events() as events, deliver_outbox():
        buy(student, course, "pay_all")
    assert [e.type for e in events][:2] == ["purchase.created", "trainer.allocated"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
