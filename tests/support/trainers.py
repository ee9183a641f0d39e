"""Trainers, their weekly availability (as the services and the admin's form take it) and sessions."""

import datetime as dt
from typing import Any

from django.db import connection

from allocation.models import Trainer
from allocation.services import availability_replace

ALL_WEEK = [(day, dt.time(0), dt.time(0)) for day in range(7)]


def available_trainer(
    name: str, capacity: int, *, tz: str = "UTC", windows: list[tuple[int, dt.time, dt.time]] | None = None
) -> Trainer:
    """A trainer with weekly availability (all day, every day, unless `windows` says otherwise)."""
    trainer = Trainer.objects.create(name=name, capacity=capacity, timezone=tz)
    availability_replace(trainer_id=trainer.pk, windows=ALL_WEEK if windows is None else windows)
    return trainer


def availability_form(trainer: Trainer, windows: list[tuple[int, str, str]] | None = None) -> dict[str, Any]:
    """The admin's availability inline as a browser posts it: the trainer's windows, or `windows`."""
    current = list(trainer.availability.order_by("id"))
    rows = [(w.weekday, f"{w.starts:%H:%M}", f"{w.ends:%H:%M}") for w in current] if windows is None else windows
    data: dict[str, Any] = {
        "availability-TOTAL_FORMS": str(max(len(rows), len(current))),
        "availability-INITIAL_FORMS": str(len(current)),
        "availability-MIN_NUM_FORMS": "0",
        "availability-MAX_NUM_FORMS": "1000",
    }
    for i, existing in enumerate(current):
        data[f"availability-{i}-id"] = str(existing.pk)
        data[f"availability-{i}-trainer"] = str(trainer.pk)
        if i >= len(rows):
            data[f"availability-{i}-DELETE"] = "on"
    for i, (weekday, starts, ends) in enumerate(rows):
        data.update({f"availability-{i}-weekday": str(weekday), f"availability-{i}-starts": starts})
        data[f"availability-{i}-ends"] = ends
        data.setdefault(f"availability-{i}-trainer", str(trainer.pk))
    return data


def overlapping_sessions() -> int:
    """Pairs of scheduled sessions of one trainer that overlap (the exclusion constraint makes it 0)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM sessions_app_trainingsession a JOIN sessions_app_trainingsession b "
            "ON a.trainer_id = b.trainer_id AND a.id < b.id "
            "AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at) "
            "WHERE a.status = 'scheduled' AND b.status = 'scheduled'"
        )
        return int(cursor.fetchone()[0])
