"""`outbox status` for cron and monitoring: a one-line verdict first, `--check` exit codes past
thresholds (options or environment), an unreachable database named within about a second; `outbox
retry` counts before it writes and asks before requeueing everything."""

import socket
import subprocess
import sys
import time
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from allocation.models import Trainer
from config.processes import ROOT
from outbox.models import Delivery, RelayHeartbeat
from purchases.models import Course
from tests.support.processes import process_env
from tests.support.purchases import buy
from tests.test_commands_outbox import dead_letter

pytestmark = pytest.mark.django_db(transaction=True)


def status(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("outbox", "status", *args, stdout=out, stderr=StringIO())
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def beat() -> None:
    now = timezone.now()
    RelayHeartbeat.objects.update_or_create(relay_id="r1", defaults={"started_at": now, "beat_at": now})


def test_verdict_line_first_and_check_exit_codes(
    make_student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    beat()
    code, text = status("--check")
    assert code == 0 and text.splitlines()[0].startswith("OK: 0 open deliveries, 0 dead, 1 relay(s) alive")

    RelayHeartbeat.objects.all().delete()
    code, text = status("--check")
    assert code == 2 and text.splitlines()[0].startswith("CRITICAL: no relay alive")
    assert status("--check", "--no-relay-ok")[0] == 0
    assert status()[0] == 0  # without --check the verdict is printed, the exit stays 0

    beat()
    buy(make_student(), course, "pay_lagging", actor="t")
    Delivery.objects.update(available_at=timezone.now() - timedelta(seconds=90))
    code, text = status("--check")
    assert code == 1 and text.splitlines()[0].startswith("WARNING: lag 90s on ")
    assert status("--check", "--max-lag", "30s")[0] == 2  # past twice the threshold
    assert status("--check", "--max-lag", "2m")[0] == 0
    monkeypatch.setenv("OUTBOX_CHECK_MAX_LAG", "40s")
    assert status("--check")[0] == 2

    Delivery.objects.update(available_at=timezone.now())
    dead_letter(make_student(), course, "pay_dead", monkeypatch)
    code, text = status("--check", "--max-lag", "1h")
    assert code == 2 and "1 dead-lettered deliveries (max 0)" in text.splitlines()[0]
    assert status("--check", "--max-lag", "1h", "--max-dead", "1")[0] == 0
    monkeypatch.setenv("OUTBOX_CHECK_MAX_DEAD", "5")
    assert status("--check", "--max-lag", "1h")[0] == 0


@pytest.mark.parametrize("server", ["silent", "closed"])
def test_an_unreachable_database_is_named_quickly_with_its_cause_without_a_traceback(server: str) -> None:
    # "silent": a server that takes the connection and never answers (a hung host, a stuck proxy);
    # "closed": nothing listens (refused at once).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if server == "silent":
        listener.listen(8)
    else:
        listener.close()
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "manage.py", "outbox", "status", "--check"],
            cwd=ROOT,
            env={**process_env(), "DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/x"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        listener.close()
    elapsed = time.monotonic() - started
    cause = "no answer within 1.0s (connect timeout)" if server == "silent" else "Connection refused"
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith(f"UNKNOWN: database unreachable at 127.0.0.1:{port}: "), done.stdout
    assert cause in done.stdout
    assert len(done.stdout.strip().splitlines()) == 1 and not done.stderr
    # The 1 s probe plus Django's start-up on a busy 2-core machine, not the pool's 20 s.
    assert elapsed < 4.0


def test_retry_dry_run_counts_and_unfiltered_retry_asks(
    make_student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = [dead_letter(make_student(), course, f"pay_dead_{i}", monkeypatch) for i in range(2)]
    out = StringIO()
    call_command("outbox", "retry", "--dry-run", stdout=out, stderr=StringIO())
    assert out.getvalue().strip() == "would requeue 2 deliveries (dry run: nothing changed)"
    assert set(Delivery.objects.filter(pk__in=[d.pk for d in dead]).values_list("status", flat=True)) == {"dead"}

    # No terminal to ask (cron, CI, a pipe): refused, nothing written.
    with pytest.raises(CommandError, match="refusing to requeue all 2 dead deliveries without confirmation"):
        call_command("outbox", "retry", stdout=StringIO(), stderr=StringIO())
    assert Delivery.objects.filter(status="dead").count() == 2

    out = StringIO()
    call_command("outbox", "retry", "--yes", stdout=out, stderr=StringIO())
    assert "requeued 2 deliveries" in out.getvalue()
    assert not Delivery.objects.filter(status="dead").exists()


def test_unfiltered_retry_from_a_real_process_with_no_stdin_is_refused(
    student: Any, course: Course, trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = dead_letter(student, course, "pay_dead", monkeypatch)
    done = subprocess.run(
        [sys.executable, "manage.py", "outbox", "retry"],
        cwd=ROOT,
        env=process_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "refusing to requeue all 1 dead deliveries without confirmation: no terminal to ask; pass --yes" in (
        done.stderr
    )
    dead.refresh_from_db()
    assert dead.status == "dead"
