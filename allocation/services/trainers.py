"""Writers of the trainers' reference data: a trainer's name, capacity and time zone, and their weekly
availability. No events of their own (a rename asks the trainer's students to resync); the allocation
path that reads them is `allocations.py`."""

import itertools
from datetime import time

from django.db import transaction

from allocation.models import Allocation, AvailabilityWindow, Trainer
from allocation.scheduling import Window
from kernel.errors import ApplicationError
from kernel.timezones import UnknownTimezone, zone
from purchases.services import student_resync_request


class CapacityBelowLoad(ApplicationError):
    """The trainer has more active purchases than the capacity asked for."""

    code = "capacity_below_load"
    status = 409


class InvalidAvailability(ApplicationError):
    """A timezone that is not an IANA name, or availability windows that are malformed or overlap."""

    code = "invalid_availability"


def trainer_save(
    *, trainer_id: int | None, name: str, capacity: int, actor: str, timezone_name: str | None = None
) -> Trainer:
    """Create or edit a trainer (reference data: no event of its own).

    Capacity never goes below the trainer's active purchases: checked under the trainer's row lock
    (raises `CapacityBelowLoad`). `timezone_name` (IANA; unchanged when None) is where the weekly
    availability is read; sessions already scheduled keep their instants (raises
    `InvalidAvailability` for an unknown zone). A rename asks each student the trainer teaches to
    resync (`student.resync_requested`), so no cached dashboard keeps showing the old name.
    """
    if timezone_name is not None:
        _check_zone(timezone_name)
    # A savepoint, deliberately: the admin calls this inside its change form's transaction and goes on
    # (the availability) after a refusal, which must roll back this part only.
    with transaction.atomic():
        if trainer_id is None:
            return Trainer.objects.create(name=name, capacity=capacity, timezone=timezone_name or "UTC")
        trainer = Trainer.objects.select_for_update(no_key=True).get(id=trainer_id)  # allocations keep inserting
        if capacity < trainer.active_count:
            raise CapacityBelowLoad(
                f"{trainer.name} has {trainer.active_count} active purchases; capacity can't go below that."
            )
        renamed = trainer.name != name
        Trainer.objects.filter(id=trainer_id).update(
            name=name, capacity=capacity, timezone=timezone_name or trainer.timezone
        )
        if renamed:
            students = Allocation.objects.filter(trainer_id=trainer_id, released_at__isnull=True).values_list(
                "purchase__student_id", flat=True
            )
            for student_id in sorted(set(students)):
                student_resync_request(student_id=student_id, actor=actor)
        trainer.refresh_from_db()
        return trainer


def availability_replace(*, trainer_id: int, windows: list[tuple[int, time, time]]) -> list[AvailabilityWindow]:
    """Replace the trainer's weekly availability with `windows` (weekday 0 = Monday, start, end in
    the trainer's local time; an end of 00:00 is midnight). Reference data: no event.

    Raises `InvalidAvailability` for a weekday outside 0-6, an end not after its start, or two
    windows of one day that overlap. Sessions already scheduled stay where they are; new sessions
    and moves use the new windows.
    """
    availability_check(windows)
    with transaction.atomic(savepoint=False):
        Trainer.objects.select_for_update(no_key=True).get(id=trainer_id)  # serialise editors of one trainer
        AvailabilityWindow.objects.filter(trainer_id=trainer_id).delete()
        return AvailabilityWindow.objects.bulk_create(
            [AvailabilityWindow(trainer_id=trainer_id, weekday=d, starts=s, ends=e) for d, s, e in windows]
        )


def availability_check(windows: list[tuple[int, time, time]]) -> None:
    """Raise `InvalidAvailability` unless every window is on weekday 0-6, ends after it starts, and
    no two windows of one day overlap."""
    for weekday, _, _ in windows:
        if not 0 <= weekday <= 6:
            raise InvalidAvailability(f"weekday {weekday} is not 0 (Monday) to 6 (Sunday)")
    parsed = sorted(Window.from_times(d, s, e) for d, s, e in windows)
    for w in parsed:
        if w.end <= w.start:
            raise InvalidAvailability(f"window {w} ends before it starts")
    for a, b in itertools.pairwise(parsed):
        if a.weekday == b.weekday and b.start < a.end:
            raise InvalidAvailability(f"windows {a} and {b} overlap")


def _check_zone(name: str) -> None:
    try:
        zone(name)
    except UnknownTimezone as exc:
        raise InvalidAvailability(str(exc)) from exc
