"""Reads for scheduling: a trainer's calendar (time zone, weekly windows, busy intervals)."""

from datetime import datetime

from django.db import connection

from sessions_app.scheduling import Calendar, Window, zone

# One statement: the trainer's zone, windows and the scheduled sessions overlapping [from, until).
# The busy lookup has the exclusion constraint's expressions and predicate, so it uses its GiST index.
_CALENDAR_SQL = """
SELECT t.timezone,
       ARRAY(SELECT a.weekday FROM allocation_availabilitywindow a WHERE a.trainer_id = t.id ORDER BY a.id),
       ARRAY(SELECT a.starts FROM allocation_availabilitywindow a WHERE a.trainer_id = t.id ORDER BY a.id),
       ARRAY(SELECT a.ends FROM allocation_availabilitywindow a WHERE a.trainer_id = t.id ORDER BY a.id),
       ARRAY(SELECT ARRAY[s.starts_at, s.ends_at] FROM sessions_app_trainingsession s
             WHERE int8range(s.trainer_id, s.trainer_id, '[]') && int8range(t.id, t.id, '[]')
               AND tstzrange(s.starts_at, s.ends_at) && tstzrange(%(from)s, %(until)s)
               AND s.status = 'scheduled' AND s.id <> %(exclude)s
             ORDER BY s.starts_at)
FROM allocation_trainer t WHERE t.id = %(trainer)s
"""


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
    tz_name, weekdays, starts, ends, busy = row
    windows = [Window.from_times(d, s, e) for d, s, e in zip(weekdays, starts, ends, strict=True)]
    return Calendar(zone=zone(tz_name), windows=windows, busy=[(s, e) for s, e in busy])
