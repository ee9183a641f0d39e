"""Demo data for a fresh stack. Courses, trainers and students carry no outbox events: they are
reference data, not the purchase state the triggers guard."""

from datetime import time
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token

from allocation.models import Trainer
from allocation.services import availability_replace
from purchases.models import Course

COURSES = [
    ("Strength basics", 6, 60, Decimal("240.00")),
    ("Marathon in 16 weeks", 16, 45, Decimal("480.00")),
    ("Mobility and yoga", 4, 60, Decimal("120.00")),
]
TRAINERS = [("Ada Trainer", 3), ("Grace Coach", 2), ("Linus Mentor", 1)]
WEEKDAYS = range(5)  # Monday to Friday
# Weekly availability in each trainer's own time zone: two zones, so the demo shows the conversion.
AVAILABILITY: dict[str, tuple[str, list[tuple[int, time, time]]]] = {
    "Ada Trainer": ("Europe/Berlin", [(d, time(9), time(12)) for d in WEEKDAYS] + [(1, time(17), time(20))]),
    "Grace Coach": ("America/New_York", [(d, time(8), time(11)) for d in WEEKDAYS] + [(5, time(9), time(13))]),
    "Linus Mentor": ("Europe/Berlin", [(d, time(18), time(21)) for d in (1, 3)]),
}
STUDENTS = ["alice", "bob", "carol"]


def seed_demo() -> dict[str, list[dict[str, Any]]]:
    """Create what is missing and describe everything (idempotent: a second run adds nothing)."""
    user_model = get_user_model()
    with transaction.atomic(durable=True):
        courses = [
            Course.objects.get_or_create(
                title=title,
                defaults={"sessions_count": count, "session_minutes": minutes, "price": price, "currency": "EUR"},
            )[0]
            for title, count, minutes, price in COURSES
        ]
        trainers = [
            Trainer.objects.get_or_create(name=name, defaults={"capacity": cap, "timezone": AVAILABILITY[name][0]})[0]
            for name, cap in TRAINERS
        ]
        for trainer in trainers:
            # Only a trainer with no availability gets the demo's: an operator's edits are kept.
            if not trainer.availability.exists():
                availability_replace(trainer_id=trainer.pk, windows=AVAILABILITY[trainer.name][1])
        students = []
        for username in STUDENTS:
            user, created = user_model.objects.get_or_create(
                username=username, defaults={"email": f"{username}@example.com"}
            )
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            token, _ = Token.objects.get_or_create(user=user)
            students.append({"id": user.pk, "email": user.email, "token": token.key})
    return {
        "students": students,
        "courses": [{"id": c.pk, "title": c.title} for c in courses],
        "trainers": [{"id": t.pk, "name": t.name, "capacity": t.capacity, "timezone": t.timezone} for t in trainers],
    }
