"""Settings from the environment: a bad value stops a process with one line naming it, no traceback."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import ROOT


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
