"""IANA time zones by name: the one check every app uses (trainers' availability, students' profiles)."""

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


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
