"""Fixtures on the real PostgreSQL and Redis named by DATABASE_URL / REDIS_URL.

Each test starts from an empty Redis database (the one REDIS_URL names is flushed: give the tests
their own). Process fixtures run the real relay, Celery worker and ASGI server as subprocesses
against the test database.
"""

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authtoken.models import Token

from allocation.models import Trainer
from config import commands
from outbox.testing import handlers_inline
from purchases.models import Course
from purchases.webhook import sign

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Run handler tasks inline, inside the relay's step (for the tests of the relay itself; the
    others deliver with `outbox.testing.deliver_outbox`)."""
    with handlers_inline():
        yield


def buy(student: Any, course: Course, payment_id: str = "pay_1", *, actor: str = "test") -> Any:
    """A purchase through the service, as the webhook would make it."""
    from purchases.services import purchase_create

    return purchase_create(
        payment_id=payment_id,
        student_id=student.pk,
        course_id=course.pk,
        amount=Decimal("1"),
        currency="EUR",
        actor=actor,
    ).purchase


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    yield


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


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
def course(db: None) -> Course:
    return Course.objects.create(title="Strength basics", sessions_count=3, session_minutes=60, price=Decimal("240"))


ALL_WEEK = [(day, dt.time(0), dt.time(0)) for day in range(7)]


def available_trainer(
    name: str, capacity: int, *, tz: str = "UTC", windows: list[tuple[int, dt.time, dt.time]] | None = None
) -> Trainer:
    """A trainer with weekly availability (all day, every day, unless `windows` says otherwise)."""
    from allocation.services import availability_replace

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


@pytest.fixture
def trainer(db: None) -> Trainer:
    return available_trainer("Ada", 5)


def webhook_body(
    *, payment_id: str, student_id: int, course_id: int, event_id: str | None = None, type: str = "payment.succeeded"
) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{payment_id}",
            "type": type,
            "created": int(time.time()),
            "data": {
                "payment_id": payment_id,
                "student_id": student_id,
                "course_id": course_id,
                "amount": "240.00",
                "currency": "EUR",
            },
        }
    ).encode()


def signature(body: bytes, *, secret: str | None = None, timestamp: int | None = None) -> str:
    return sign(
        body=body,
        secret=secret or settings.PAYMENT_WEBHOOK_SECRETS[0],
        timestamp=int(time.time()) if timestamp is None else timestamp,
    )


def http(
    host: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, Any]:
    """One request to a test server: `(status, JSON body)`; an HTTP error keeps its status and body."""
    request = urllib.request.Request(f"http://{host}{path}", data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post_webhook(host: str, body: bytes, *, timeout: float = 30) -> tuple[int, Any]:
    """POST `body` to the server's payment webhook, signed as the provider would."""
    headers = {"Content-Type": "application/json", "Payment-Signature": signature(body)}
    return http(host, "/api/v1/payments/webhook", body=body, headers=headers, timeout=timeout)


# -- real processes -------------------------------------------------------------------------------


def test_database_url() -> str:
    """DATABASE_URL of the database the tests run in (pytest-django's test database)."""
    s = connection.settings_dict
    host = quote(s["HOST"] or "", safe="")
    auth = s["USER"] + (f":{quote(s['PASSWORD'], safe='')}" if s["PASSWORD"] else "")
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{s['NAME']}"


test_database_url.__test__ = False  # type: ignore[attr-defined]


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=test_database_url(),
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONUNBUFFERED="1",
        OUTBOX_POLL_SECONDS="0.2",
        OUTBOX_BACKOFF_BASE_SECONDS="0.2",
        OUTBOX_BACKOFF_MAX_SECONDS="2",
        DB_APPLICATION_NAME="coursechain-test-subprocess",
    )
    env.update(extra)
    return env


class Processes:
    """Starts real processes and always stops them (SIGTERM, then SIGKILL)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(args, cwd=ROOT, env=process_env(**env), stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def relay(self, name: str = "relay", **env: str) -> subprocess.Popen[bytes]:
        return self.start(name, commands.relay(), **env)

    def worker(self, name: str = "worker", **env: str) -> subprocess.Popen[bytes]:
        args = commands.worker("--pool", "solo", "--without-heartbeat", "-n", f"{name}@%h")
        return self.start(name, args, **env)

    def web(self, name: str = "web", port: int | None = None, /, **env: str) -> str:
        """The Procfile's `web` process: gunicorn serving `config.wsgi` (HTTP only)."""
        port = port or free_port()
        self.start(name, commands.web(f"127.0.0.1:{port}", "--workers", "1"), **env)
        wait_until(lambda: _port_open(port), timeout=30, what=f"{name} to listen on {port}")
        return f"127.0.0.1:{port}"

    def server(self, name: str = "web", port: int | None = None, /, **env: str) -> str:
        """The Procfile's `ws` process: uvicorn serving `config.asgi` (WebSockets, and HTTP too)."""
        port = port or free_port()
        self.start(name, commands.ws("127.0.0.1", port), **env)
        wait_until(lambda: _port_open(port), timeout=30, what=f"{name} to listen on {port}")
        return f"127.0.0.1:{port}"

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()
        # A process killed with -9 leaves its server session behind for a moment; end them so the
        # test database can be flushed and dropped.
        # Only the subprocesses' sessions: this process's own pooled connections must live on.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name <> %s",
                [connection.settings_dict["OPTIONS"].get("application_name", "")],
            )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
