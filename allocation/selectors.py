"""Reads for scheduling: a trainer's calendar (time zone, weekly windows, busy intervals) and the
earliest free series in it. Used by allocation (is there room?) and by the sessions app (take it)."""

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from allocation import scheduling
from allocation.scheduling import Calendar, Window
from kernel.timezones import zone

# One statement: the trainer's zone, windows, and busy time overlapping [from, until). The busy
# lookup has the exclusion constraint's expressions and predicate, so it uses its GiST index; its
# sessions are merged into runs (`range_agg`) and sent as epoch seconds, so a trainer booked solid for
# weeks is a few numbers, not hundreds of timestamps to parse. Written as a query on a trainer id
# expression so that the handlers' services can run it as a LATERAL subquery of their first statement
# (one round trip for the purchase, its trainer(s) and the calendar; see `calendar_query`).
_CALENDAR_QUERY = """
SELECT t.timezone, w.days, w.starts, w.ends, b.lo, b.hi
FROM allocation_trainer t
CROSS JOIN LATERAL (
    SELECT array_agg(a.weekday ORDER BY a.id) AS days, array_agg(a.starts ORDER BY a.id) AS starts,
           array_agg(a.ends ORDER BY a.id) AS ends
    FROM allocation_availabilitywindow a WHERE a.trainer_id = t.id
) w
CROSS JOIN LATERAL (
    SELECT array_agg(extract(epoch FROM lower(r))::float8 ORDER BY lower(r)) AS lo,
           array_agg(extract(epoch FROM upper(r))::float8 ORDER BY lower(r)) AS hi
    FROM unnest((
        SELECT range_agg(tstzrange(s.starts_at, s.ends_at)) FROM sessions_app_trainingsession s
        WHERE int8range(s.trainer_id, s.trainer_id, '[]') && int8range(t.id, t.id, '[]')
          AND tstzrange(s.starts_at, s.ends_at) && tstzrange({start}, {until})
          AND s.status = 'scheduled' AND s.id <> %(exclude)s
    )) AS r
) b
WHERE t.id = {trainer}
"""
_CALENDAR_SQL = _CALENDAR_QUERY.format(trainer="%(trainer)s", start="%(from)s", until="%(until)s")


def calendar_query(*, trainer: str, until: str, start: str = "%(from)s") -> str:
    """The calendar read as SQL text (at most one row: zone, weekdays, starts, ends, busy lows, busy
    highs; `calendar_from_row` reads it) of the trainer whose id is the SQL expression `trainer`, with
    busy time from the SQL expression `start` (the parameter `%(from)s` unless given) to the SQL
    expression `until`, leaving out session `%(exclude)s` (0: none). For a caller's statement to join
    LATERAL; the expressions are the caller's constant SQL, never values."""
    return _CALENDAR_QUERY.format(trainer=trainer, start=start, until=until)


def calendar_from_row(row: tuple[Any, ...] | list[Any]) -> Calendar:
    """The `Calendar` of one row of `calendar_query` (its six columns, in order)."""
    tz_name, weekdays, starts, ends, lows, highs = row
    windows = [Window.from_times(d, s, e) for d, s, e in zip(weekdays or [], starts or [], ends or [], strict=True)]
    busy = [(_instant(lo), _instant(hi)) for lo, hi in zip(lows or [], highs or [], strict=True)]
    return Calendar(zone=zone(tz_name), windows=windows, busy=busy)


def trainer_calendar(*, trainer_id: int, start: datetime, until: datetime, exclude_session_id: int = 0) -> Calendar:
    """The trainer's calendar for [start, until), as committed when the statement began.

    `exclude_session_id` leaves one session out of the busy time (the one being moved).
    Raises `LookupError` for an unknown trainer.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _CALENDAR_SQL,
            {"trainer": trainer_id, "from": start, "until": until, "exclude": exclude_session_id},
        )
        row = cursor.fetchone()
    if row is None:
        raise LookupError(f"no trainer with id {trainer_id}")
    return calendar_from_row(row)


def _instant(epoch: float) -> datetime:
    # Session times are whole minutes: rounding to the microsecond undoes float noise.
    return datetime.fromtimestamp(round(epoch, 6), UTC)


def earliest_start() -> datetime:
    return timezone.now() + timedelta(hours=settings.SCHEDULING_LEAD_HOURS)


def horizon_end() -> datetime:
    """The latest start of a series' first session: now plus the lead time plus the horizon."""
    return earliest_start() + timedelta(weeks=settings.SCHEDULING_HORIZON_WEEKS)


def free_series(
    *, trainer_id: int, count: int, minutes: int, earliest: datetime, exclude_session_id: int = 0
) -> list[tuple[datetime, datetime]] | None:
    """The trainer's earliest free weekly series from `earliest` (one read), or None if none starts
    within the horizon (counted from now plus the lead time)."""
    until = horizon_end()
    if earliest > until:
        return None
    cal = trainer_calendar(
        trainer_id=trainer_id,
        start=earliest,
        until=until + timedelta(weeks=count, days=1),
        exclude_session_id=exclude_session_id,
    )
    return series_in(cal, count=count, minutes=minutes, earliest=earliest, until=until)


def series_in(
    cal: Calendar, *, count: int, minutes: int, earliest: datetime, until: datetime
) -> list[tuple[datetime, datetime]] | None:
    """The earliest free weekly series in `cal` (read from `earliest` to `until` plus `count` weeks and
    a day) starting from `earliest` and no later than `until`, or None."""
    if not scheduling.has_any_window(cal, minutes):
        return None
    return scheduling.first_free_series(
        cal, count=count, minutes=minutes, earliest=earliest, until=until, step=settings.SCHEDULING_STEP_MINUTES
    )
