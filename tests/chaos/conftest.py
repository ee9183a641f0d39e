from decimal import Decimal
from typing import Any

import pytest

from purchases.models import Course
from tests.support.trainers import available_trainer


@pytest.fixture
def world(make_student: Any) -> dict[str, list[int]]:
    """12 students, 2 courses, and fewer trainer places than purchases, so some are waitlisted."""
    students = [make_student().pk for _ in range(12)]
    courses = [
        Course.objects.create(title="Chaos A", sessions_count=3, session_minutes=60, price=Decimal("10")).pk,
        Course.objects.create(title="Chaos B", sessions_count=2, session_minutes=45, price=Decimal("20")).pk,
    ]
    trainers = [available_trainer(f"Chaos trainer {i}", cap).pk for i, cap in enumerate([40, 30, 20])]
    return {"students": students, "courses": courses, "trainers": trainers}
