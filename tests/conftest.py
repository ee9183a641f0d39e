"""Fixtures on the real PostgreSQL and Redis named by DATABASE_URL / REDIS_URL.

Each test starts from an empty Redis database (the one REDIS_URL names is flushed: give the tests
their own). Process fixtures run the real relay, Celery worker and ASGI server as subprocesses
against the test database. Fixtures only: the helpers are in tests/support.
"""

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.test import Client
from rest_framework.authtoken.models import Token

from allocation.models import Trainer
from outbox.testing import handlers_inline
from purchases.models import Course
from tests.support.processes import Processes, end_subprocess_sessions
from tests.support.trainers import available_trainer


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Run handler tasks inline, inside the relay's step (for the tests of the relay itself; the
    others deliver with `outbox.testing.deliver_outbox`)."""
    with handlers_inline():
        yield


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    yield


@pytest.fixture
def make_student(db: None) -> Callable[..., Any]:
    counter = iter(range(1, 1_000_000))

    def make(username: str | None = None) -> Any:
        name = username or f"student{next(counter)}"
        user = get_user_model().objects.create_user(username=name, email=f"{name}@example.com")
        Token.objects.create(user=user)
        return user

    return make


@pytest.fixture
def student(make_student: Callable[..., Any]) -> Any:
    return make_student("alice")


@pytest.fixture
def ops(db: None) -> Client:
    """A logged-in superuser's client of the real admin."""
    get_user_model().objects.create_superuser("ops", "ops@example.com", "secret")
    client = Client()
    client.login(request=HttpRequest(), username="ops", password="secret")  # through the real auth backends (axes too)
    return client


@pytest.fixture
def course(db: None) -> Course:
    return Course.objects.create(title="Strength basics", sessions_count=3, session_minutes=60, price=Decimal("240"))


@pytest.fixture
def trainer(db: None) -> Trainer:
    return available_trainer("Ada", 5)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()
        end_subprocess_sessions()
