"""Where sessions can go: a trainer's weekly availability in local time, minus their busy intervals.

Pure functions over plain values (no database): the services read a `Calendar` in one query and
write what these return. Times are aware `datetime`s in UTC; availability is wall-clock time in the
trainer's IANA zone, so a weekly series keeps its local time across DST changes (10:00 in Berlin
is 09:00 UTC in winter and 08:00 UTC in summer). A local time that does not exist (the hour skipped
in spring) is never offered; an ambiguous one (the hour repeated in autumn) means its first
occurrence.
"""

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DAY_MINUTES = 24 * 60


class UnknownTimezone(ValueError):
    """Not an IANA time zone name."""


def zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`; raises `UnknownTimezone` for anything else (also paths, empty)."""
    if not name or name not in _zone_names():
        raise UnknownTimezone(f"{name!r} is not an IANA time zone name (e.g. Europe/Berlin)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:  # listed but not loadable: treat as unknown
        raise UnknownTimezone(f"{name!r} is not an IANA time zone name") from exc


_names: frozenset[str] | None = None


def _zone_names() -> frozenset[str]:
    global _names
    if _names is None:
        _names = frozenset(available_timezones())
    return _names


@dataclass(frozen=True, order=True)
class Window:
    """Weekly availability: `weekday` 0 = Monday; minutes of the local day, `end` up to 1440."""

    weekday: int
    start: int
    end: int

    def __str__(self) -> str:
        day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[self.weekday]
        return f"{day} {self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"

    @classmethod
    def from_times(cls, weekday: int, starts: time, ends: time) -> "Window":
        end = DAY_MINUTES if ends == time(0) else ends.hour * 60 + ends.minute
        return cls(weekday=weekday, start=starts.hour * 60 + starts.minute, end=end)


@dataclass
class Calendar:
    """One trainer's availability and busy intervals (scheduled sessions, sorted, never overlapping:
    the exclusion constraint guarantees it)."""

    zone: ZoneInfo
    windows: Sequence[Window]
    busy: list[tuple[datetime, datetime]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.busy.sort()
        self._starts = [s for s, _ in self.busy]

    def is_free(self, start: datetime, end: datetime) -> bool:
        # Busy intervals don't overlap, so their ends are sorted too: only the last one starting
        # before `end` can reach into [start, end).
        i = bisect.bisect_left(self._starts, end)
        return i == 0 or self.busy[i - 1][1] <= start

    def occupy(self, start: datetime, end: datetime) -> None:
        i = bisect.bisect_left(self._starts, start)
        self.busy.insert(i, (start, end))
        self._starts.insert(i, start)


def local_to_utc(day: date, minute: int, tz: ZoneInfo) -> datetime | None:
    """`day` at `minute` past local midnight in UTC; None if that wall-clock time does not exist."""
    day, minute = day + timedelta(days=minute // DAY_MINUTES), minute % DAY_MINUTES
    local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=tz)
    utc = local.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None  # skipped by a DST change
    return utc


def _slot(day: date, window: Window, minute: int, minutes: int, tz: ZoneInfo) -> tuple[datetime, datetime] | None:
    """A session of `minutes` starting at local `minute` of `day` inside `window`, in UTC, if it fits.

    It must fit both in wall-clock terms and in real time (a window that spans a DST change is an
    hour shorter or longer than its wall-clock length).
    """
    if minute < window.start or minute + minutes > window.end:
        return None
    start = local_to_utc(day, minute, tz)
    if start is None:
        return None
    end = start + timedelta(minutes=minutes)
    # Wall-clock arithmetic on an aware datetime, then to UTC (an end skipped by DST counts as before it).
    window_end = (datetime.combine(day, time(0), tzinfo=tz) + timedelta(minutes=window.end)).astimezone(UTC)
    if end > window_end:
        return None
    return start, end


def _candidates(
    cal: Calendar, *, minutes: int, earliest: datetime, until: datetime, step: int
) -> Iterator[tuple[date, Window, int]]:
    """Local (day, window, minute) starts in time order from `earliest` up to `until` (UTC)."""
    day = earliest.astimezone(cal.zone).date() - timedelta(days=1)
    last = until.astimezone(cal.zone).date() + timedelta(days=1)
    by_day: dict[int, list[Window]] = {}
    for w in sorted(cal.windows, key=lambda w: (w.weekday, w.start)):
        by_day.setdefault(w.weekday, []).append(w)
    while day <= last:
        for window in by_day.get(day.weekday(), ()):
            for minute in range(window.start, window.end - minutes + 1, step):
                yield day, window, minute
        day += timedelta(days=1)


def first_free_series(
    cal: Calendar,
    *,
    count: int,
    minutes: int,
    earliest: datetime,
    until: datetime,
    step: int,
    weeks_apart: int = 1,
) -> list[tuple[datetime, datetime]] | None:
    """The earliest series of `count` sessions, `weeks_apart` weeks apart at the same local weekday
    and time, each inside the availability and free, the first at or after `earliest` and no later
    than `until`. None if there is none."""
    for day, window, minute in _candidates(cal, minutes=minutes, earliest=earliest, until=until, step=step):
        series = []
        for k in range(count):
            slot = _slot(day + timedelta(weeks=k * weeks_apart), window, minute, minutes, cal.zone)
            if slot is None or slot[0] < earliest or (k == 0 and slot[0] > until) or not cal.is_free(*slot):
                break
            series.append(slot)
        else:
            return series
    return None


def has_any_window(cal: Calendar, minutes: int) -> bool:
    """Whether a session of `minutes` fits in any window at all (cheap, before reading busy time)."""
    return any(w.end - w.start >= minutes for w in cal.windows)
