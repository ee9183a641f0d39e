"""Settings from the environment: a bad value stops a process with one line naming it, no traceback;
Celery's time limits follow the handler lease, and a handler out of time hands its work back."""

import os
import subprocess
import sys
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from allocation.models import Trainer
from config.processes import ROOT
from outbox.models import Delivery
from outbox.testing import deliver_outbox, deliver_pending
from purchases.models import Course, Purchase
from tests.support.purchases import buy
from tests.support.waiting import wait_until


def manage_check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"OUTBOX_BATCH_SIZE": "abc"},
            "configuration error: OUTBOX_BATCH_SIZE='abc': Not a valid integer.",
        ),
        (
            {"OUTBOX_BATCH_SIZE": "0", "DJANGO_DEBUG": "maybe"},
            "configuration error: DJANGO_DEBUG='maybe': Not a valid boolean.; "
            "OUTBOX_BATCH_SIZE='0': Must be greater than or equal to 1.",
        ),
        ({"LOG_FORMAT": "xml"}, "configuration error: LOG_FORMAT='xml': Must be one of: plain, json."),
        (
            {"API_THROTTLE_STUDENT_RATE": "300"},
            "configuration error: API_THROTTLE_STUDENT_RATE='300': expected a rate like 300/min",
        ),
        (
            {"DB_POOL_MIN_SIZE": "12", "DB_POOL_MAX_SIZE": "10"},
            "configuration error: DB_POOL_MIN_SIZE=12 is above DB_POOL_MAX_SIZE=10",
        ),
        (
            {"COURSECHAIN_DEV": "0", "PAYMENT_WEBHOOK_SECRET": ""},
            "configuration error: DJANGO_SECRET_KEY must be set (or COURSECHAIN_DEV=1 for local development)",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(env: dict[str, str], line: str) -> None:
    done = manage_check(**env)
    assert done.returncode == 2
    assert done.stderr.strip() == line
    assert "Traceback" not in done.stderr + done.stdout


def test_good_values_are_typed_and_celery_limits_follow_the_handler_lease() -> None:
    assert isinstance(settings.OUTBOX_BATCH_SIZE, int) and isinstance(settings.OUTBOX_LEASE_SECONDS, float)
    lease = settings.OUTBOX_HANDLER_LEASE_SECONDS
    assert 0 < settings.CELERY_TASK_SOFT_TIME_LIMIT < settings.CELERY_TASK_TIME_LIMIT < lease
    assert manage_check().returncode == 0


@pytest.mark.django_db(transaction=True)
def test_a_handler_out_of_time_hands_its_deliveries_back_unattempted(
    student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery's soft time limit (inside the lease) stops a slow handler: its deliveries go back
    unattempted, not failed, and the next pass delivers them."""
    from allocation import services

    real, calls = services.trainer_allocate, []

    def slow_once(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise SoftTimeLimitExceeded()
        return real(**kwargs)

    monkeypatch.setattr(services, "trainer_allocate", slow_once)
    with deliver_outbox():
        buy(student, course, "pay_slow")
    delivery = Delivery.objects.get(sink="allocation.allocate_trainer")
    assert delivery.status != "dead" and delivery.last_error == ""
    wait_until(lambda: deliver_pending() is not None and Purchase.objects.get().status == "active", what="the retry")
    delivery.refresh_from_db()
    assert delivery.status == "done" and len(calls) == 2
