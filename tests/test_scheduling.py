"""Scheduling in the trainer's local time: weekly series across the spring and autumn DST changes,
skipped and repeated hours, busy time, and the services that place sessions with a real database."""

import itertools
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import IntegrityError, connection, transaction

from allocation.models import Trainer
from allocation.scheduling import Calendar, Window, first_free_series
from allocation.services import trainer_allocate
from kernel.timezones import UnknownTimezone, zone
from outbox.models import OutboxEvent
from outbox.services import Cause
from purchases.models import Course
from sessions_app.models import TrainingSession
from sessions_app.services import sessions_generate
from tests.support.purchases import buy
from tests.support.trainers import available_trainer

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def series(cal: Calendar, earliest: datetime, *, count: int = 4, minutes: int = 60) -> list[datetime]:
    found = first_free_series(
        cal, count=count, minutes=minutes, earliest=earliest, until=earliest + timedelta(weeks=8), step=30
    )
    assert found is not None
    assert all(end - start == timedelta(minutes=minutes) for start, end in found)
    return [start for start, _ in found]


@pytest.mark.parametrize(
    ("tz", "weekday", "earliest", "utc_hours"),
    [
        # Berlin, spring: Sunday 2027-03-28 02:00 -> 03:00. Mondays at 10:00 local: 09:00 UTC, then 08:00.
        (BERLIN, 0, utc(2027, 3, 15), [9, 9, 8, 8]),
        # Berlin, autumn: Sunday 2027-10-31 03:00 -> 02:00. 08:00 UTC, then 09:00.
        (BERLIN, 0, utc(2027, 10, 18), [8, 8, 9, 9]),
        # New York, spring: Sunday 2027-03-14. Wednesdays at 10:00 local: 15:00 UTC, then 14:00.
        (NEW_YORK, 2, utc(2027, 3, 1), [15, 15, 14, 14]),
        # New York, autumn: Sunday 2027-11-07. 14:00 UTC, then 15:00.
        (NEW_YORK, 2, utc(2027, 10, 25), [14, 14, 15, 15]),
    ],
    ids=["berlin-spring", "berlin-autumn", "new-york-spring", "new-york-autumn"],
)
def test_a_weekly_series_keeps_its_local_time_across_dst(
    tz: ZoneInfo, weekday: int, earliest: datetime, utc_hours: list[int]
) -> None:
    cal = Calendar(zone=tz, windows=[Window.from_times(weekday, time(10), time(11))])
    starts = series(cal, earliest)
    assert [s.hour for s in starts] == utc_hours
    assert {(s.astimezone(tz).weekday(), s.astimezone(tz).time()) for s in starts} == {(weekday, time(10))}
    assert [b - a for a, b in itertools.pairwise(starts)].count(timedelta(weeks=1)) == 2  # one DST week


def test_the_skipped_spring_hour_is_never_offered() -> None:
    # Sunday 2027-03-28 in Berlin has no 02:00-02:59; a 02:00-04:00 window offers only 03:00.
    cal = Calendar(zone=BERLIN, windows=[Window.from_times(6, time(2), time(4))])
    (start,) = series(cal, utc(2027, 3, 27), count=1)
    assert start == utc(2027, 3, 28, 1) and start.astimezone(BERLIN).time() == time(3)
    # The next Sunday is an ordinary day again: 02:00 local exists.
    (later,) = series(cal, start + timedelta(hours=1), count=1)
    assert later.astimezone(BERLIN) == datetime(2027, 4, 4, 2, tzinfo=BERLIN)


def test_the_repeated_autumn_hour_means_its_first_occurrence() -> None:
    # Sunday 2027-10-31 in Berlin: 02:00-03:00 happens twice (CEST, then CET); the window is real time.
    cal = Calendar(zone=BERLIN, windows=[Window.from_times(6, time(2), time(3))])
    (start,) = series(cal, utc(2027, 10, 30), count=1)
    assert start == utc(2027, 10, 31, 0)  # 02:00 CEST
    # Busy then: the wall-clock hour's second occurrence (CET) is not offered; a week later it is 01:00 UTC.
    cal.occupy(start, start + timedelta(minutes=60))
    (again,) = series(cal, utc(2027, 10, 30), count=1)
    assert again == utc(2027, 11, 7, 1) and again.astimezone(BERLIN).time() == time(2)


def test_busy_time_pushes_the_series_to_the_next_free_place() -> None:
    cal = Calendar(zone=BERLIN, windows=[Window.from_times(0, time(9), time(12))])
    first = series(cal, utc(2027, 1, 4), count=3)
    for start in first:
        cal.occupy(start, start + timedelta(minutes=60))
    second = series(cal, utc(2027, 1, 4), count=3)
    assert [s.astimezone(BERLIN).time() for s in second] == [time(10)] * 3  # the next slot, same weeks
    assert second[0] - first[0] == timedelta(hours=1)


def test_midnight_windows_and_unknown_zones() -> None:
    assert Window.from_times(0, time(22), time(0)).end == 24 * 60
    cal = Calendar(zone=NEW_YORK, windows=[Window.from_times(4, time(23), time(0))])
    (start,) = series(cal, utc(2027, 1, 1), count=1)
    assert start.astimezone(NEW_YORK).time() == time(23)
    for bad in ["Mars/Olympus", "", "../etc/passwd", "UTC\x00"]:
        with pytest.raises(UnknownTimezone):
            zone(bad)


# -- with the database ----------------------------------------------------------------------------


def _lead_until(settings: Any, moment: datetime) -> None:
    """Make `now + lead time` equal `moment`: the scheduler then starts looking there."""
    settings.SCHEDULING_LEAD_HOURS = (moment - datetime.now(UTC)).total_seconds() / 3600


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("tz", "start", "expected_utc_hours"),
    [("Europe/Berlin", utc(2027, 3, 15), [9, 9, 8]), ("America/New_York", utc(2027, 10, 25), [14, 14, 15])],
    ids=["berlin-spring", "new-york-autumn"],
)
def test_generated_sessions_stay_at_10_local_across_dst(
    settings: Any, student: Any, course: Course, tz: str, start: datetime, expected_utc_hours: list[int]
) -> None:
    _lead_until(settings, start)
    trainer = available_trainer("Local", 3, tz=tz, windows=[(d, time(10), time(11)) for d in range(7)])
    purchase = buy(student, course, "pay_dst")
    cause = Cause(actor="test", correlation_id="pay_dst")
    trainer_allocate(purchase_id=purchase.pk, cause=cause)
    sessions = sessions_generate(purchase_id=purchase.pk, cause=cause)
    local = ZoneInfo(tz)
    assert [s.starts_at.astimezone(local).time() for s in sessions] == [time(10)] * 3
    stored = list(TrainingSession.objects.filter(purchase=purchase).order_by("number"))
    assert [s.starts_at.hour for s in stored] == expected_utc_hours
    assert all(s.trainer_id == trainer.pk and s.ends_at - s.starts_at == timedelta(hours=1) for s in stored)
    (event,) = OutboxEvent.objects.filter(type="sessions.generated")
    assert [s["starts_at"] for s in event.payload["sessions"]] == [s.starts_at.isoformat() for s in stored]
    assert all(s["starts_at"].endswith("+00:00") for s in event.payload["sessions"])


@pytest.mark.django_db(transaction=True)
def test_postgresql_refuses_overlapping_scheduled_sessions_of_one_trainer(
    student: Any, course: Course, trainer: Trainer
) -> None:
    cause = Cause(actor="test", correlation_id="pay_1")
    purchase = buy(student, course, "pay_1")
    trainer_allocate(purchase_id=purchase.pk, cause=cause)
    (first, *_) = sessions_generate(purchase_id=purchase.pk, cause=cause)
    overlap = first.starts_at + timedelta(minutes=30)
    # Raw SQL: no code path gets past the constraint.
    with (
        pytest.raises(IntegrityError, match="session_trainer_no_overlap"),
        transaction.atomic(),
        connection.cursor() as c,
    ):
        c.execute(
            "INSERT INTO sessions_app_trainingsession "
            "(purchase_id, trainer_id, number, starts_at, ends_at, duration_minutes, status) "
            "VALUES (%s, %s, 99, %s, %s, 60, 'scheduled')",
            [purchase.pk, trainer.pk, overlap, overlap + timedelta(hours=1)],
        )
