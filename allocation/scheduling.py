"""Where sessions can go: a trainer's weekly availability in local time, minus their busy intervals.

Pure functions over plain values (no database): the services read a `Calendar` in one query and
write what these return. Times are aware `datetime`s in UTC; availability is wall-clock time in the
trainer's IANA zone, so a weekly series keeps its local time across DST changes (10:00 in Berlin
is 09:00 UTC in winter and 08:00 UTC in summer). A local time that does not exist (the hour skipped
in spring) is never offered; an ambiguous one (the hour repeated in autumn) means its first
occurrence.
"""

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY_MINUTES = 24 * 60


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
    """One trainer's availability and busy intervals (scheduled sessions; the exclusion constraint
    keeps them from overlapping, and touching ones are merged into runs here)."""

    zone: ZoneInfo
    windows: Sequence[Window]
    busy: list[tuple[datetime, datetime]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._merge()

    def _merge(self) -> None:
        # Back-to-back sessions form one busy run: a search jumps over a fully booked day at once.
        self.busy.sort()
        runs: list[list[datetime]] = []
        for start, end in self.busy:
            if runs and start <= runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], end)
            else:
                runs.append([start, end])
        self._runs = [(s, e) for s, e in runs]
        self._starts = [s for s, _ in self._runs]

    def busy_until(self, start: datetime, end: datetime) -> datetime | None:
        """None if [start, end) is free, else the end of the busy run that reaches into it.

        Runs don't overlap, so their ends are sorted too: the last one starting before `end` is the
        only one that can reach into [start, end), and it ends latest.
        """
        i = bisect.bisect_left(self._starts, end)
        if i == 0 or self._runs[i - 1][1] <= start:
            return None
        return self._runs[i - 1][1]

    def is_free(self, start: datetime, end: datetime) -> bool:
        return self.busy_until(start, end) is None

    def occupy(self, start: datetime, end: datetime) -> None:
        self.busy.append((start, end))
        self._merge()


def local_to_utc(day: date, minute: int, tz: ZoneInfo) -> datetime | None:
    """`day` at `minute` past local midnight in UTC; None if that wall-clock time does not exist."""
    day, minute = day + timedelta(days=minute // DAY_MINUTES), minute % DAY_MINUTES
    local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=tz)
    utc = local.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None  # skipped by a DST change
    return utc


class _Days:
    """Per local day: UTC midnight if the day has one UTC offset throughout (the fast, common case:
    a slot is then midnight plus minutes), else None (a DST day: each time is converted on its own)."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._cache: dict[date, datetime | None] = {}

    def midnight(self, day: date) -> datetime | None:
        if day not in self._cache:
            start = datetime.combine(day, time(0), tzinfo=self.tz)
            end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.tz)
            same = start.utcoffset() == end.utcoffset() == (start + timedelta(hours=12)).utcoffset()
            self._cache[day] = start.astimezone(UTC) if same else None
        return self._cache[day]

    def slot(self, day: date, window: Window, minute: int, minutes: int) -> tuple[datetime, datetime] | None:
        """A session of `minutes` at local `minute` of `day` inside `window`, in UTC, if it fits both
        in wall-clock terms and in real time (a window spanning a DST change is an hour shorter or
        longer than its wall-clock length); None if it doesn't or the local time doesn't exist."""
        if minute < window.start or minute + minutes > window.end:
            return None
        midnight = self.midnight(day)
        if midnight is not None:
            start = midnight + timedelta(minutes=minute)
            return start, start + timedelta(minutes=minutes)
        start_or_none = local_to_utc(day, minute, self.tz)
        if start_or_none is None:
            return None
        end = start_or_none + timedelta(minutes=minutes)
        # Wall-clock arithmetic on an aware datetime, then to UTC (an end skipped by DST counts as before it).
        window_end = (datetime.combine(day, time(0), tzinfo=self.tz) + timedelta(minutes=window.end)).astimezone(UTC)
        return None if end > window_end else (start_or_none, end)


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
    than `until`. None if there is none.

    Starts are on a grid of `step` minutes from each window's start. A start that runs into busy
    time jumps past it along the grid (on days with one UTC offset; on a DST day it steps), so a
    trainer booked for weeks costs about one look per busy interval, not one per grid point.
    """
    days = _Days(cal.zone)
    by_day: dict[int, list[Window]] = {}
    for w in sorted(cal.windows):
        by_day.setdefault(w.weekday, []).append(w)
    day = earliest.astimezone(cal.zone).date() - timedelta(days=1)
    last = until.astimezone(cal.zone).date() + timedelta(days=1)
    while day <= last:
        for window in by_day.get(day.weekday(), ()):
            minute = window.start
            while minute + minutes <= window.end:
                series, blocked = _series_at(days, cal, day, window, minute, minutes, count, weeks_apart, earliest)
                if series is not None:
                    return series if series[0][0] <= until else None
                minute += _skip(days, blocked, minute, step)
        day += timedelta(days=1)
    return None


def _series_at(
    days: _Days,
    cal: Calendar,
    day: date,
    window: Window,
    minute: int,
    minutes: int,
    count: int,
    weeks_apart: int,
    earliest: datetime,
) -> tuple[list[tuple[datetime, datetime]] | None, tuple[date, datetime, datetime] | None]:
    """The series starting at local `minute` of `day`, or `(None, (day, slot start, free from))`
    saying where it was blocked (free from = None when it can't be told)."""
    series = []
    for k in range(count):
        on = day + timedelta(weeks=k * weeks_apart)
        slot = days.slot(on, window, minute, minutes)
        if slot is None:
            return None, None
        if slot[0] < earliest:
            return None, (on, slot[0], earliest)
        busy_end = cal.busy_until(*slot)
        if busy_end is not None:
            return None, (on, slot[0], busy_end)
        series.append(slot)
    return series, None


def _skip(days: _Days, blocked: tuple[date, datetime, datetime] | None, minute: int, step: int) -> int:
    """How many minutes to move the start along the grid: past the blocking interval when the blocked
    day has one UTC offset (wall minutes = real minutes), else one step."""
    if blocked is None or days.midnight(blocked[0]) is None:
        return step
    _, start, free_from = blocked
    gap = int((free_from - start).total_seconds() // 60)
    return max(step, -(-gap // step) * step)


def has_any_window(cal: Calendar, minutes: int) -> bool:
    """Whether a session of `minutes` fits in any window at all (cheap, before reading busy time)."""
    return any(w.end - w.start >= minutes for w in cal.windows)
