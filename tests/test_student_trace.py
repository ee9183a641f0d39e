"""`manage.py trace --student` through the real processes, one test per verdict of issue 17: healthy; a
client that stops reading; the relay stopped with events committed; Redis unreachable for the push; a
dead handler delivery ahead of the student's stream; a killed `ws` process whose entries expire."""

import json
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from config.processes import free_port
from purchases.models import Course
from tests.support.processes import Processes
from tests.support.sockets import SMALL_BUFFER, manage
from tests.support.waiting import wait_until
from tests.support.webhooks import post_webhook, webhook_body
from tests.support.ws_client import StreamClient, tuned_server
from tests.test_realtime import emit, token
from tests.test_trace_processes import let_time_pass

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def trace(student: Any) -> tuple[int, dict[str, Any]]:
    """`trace --student <id> --json`: (exit code, report)."""
    out = StringIO()
    try:
        call_command("trace", "--student", str(student.pk), "--json", stdout=out, stderr=StringIO())
        code = 0
    except SystemExit as exit:
        code = int(exit.code or 0)
    return code, json.loads(out.getvalue())


def verdict_becomes(student: Any, wanted: str, *, timeout: float = 30) -> tuple[int, dict[str, Any]]:
    last: list[Any] = []

    def check() -> bool:
        last[:] = [trace(student)]
        return bool(last[0][1]["verdict"]["code"] == wanted)

    try:
        wait_until(check, timeout=timeout, what=f"verdict {wanted}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last report: {json.dumps(last[0][1])[:1500] if last else None}") from None
    return last[0]


def relay_up(processes: Processes, name: str = "relay", **env: str) -> None:
    processes.relay(name, **env)
    wait_until(lambda: "started" in processes.log(name), what=f"{name} up")


def test_healthy_student_is_current_with_every_socket_at_the_last_seq(processes: Processes, student: Any) -> None:
    host = processes.server("ws-1")
    relay_up(processes)
    with StreamClient(host, token=token(student), after=0) as a, StreamClient(host, token=token(student)) as b:
        emit(student, 3)
        a.wait_for_seq(3)
        b.wait_for_seq(3)
        code, report = verdict_becomes(student, "current")
    assert code == 0
    assert report["verdict"]["message"] == "current: 2 socket(s) at seq 3 of 3"
    assert (report["stream"]["last_seq"], report["stream"]["delivered_seq"]) == (3, 3)
    assert report["stream"]["open_deliveries"] == []
    assert report["cache"]["floor"] == 3
    assert [s["last_sent"] for s in report["sockets"]] == [3, 3]
    assert {s["start_cursor"] for s in report["sockets"]} == {0}

    # The real command, as a script would run it: no socket is open any more, nothing undelivered.
    result = manage("trace", "--student", str(student.pk))
    assert result.returncode == 0, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"Student {student.pk} -- OK (no_socket): no open socket"), first
    assert "UTC" in result.stdout


def test_a_client_that_stops_reading_is_named_with_how_far_behind_it_is(processes: Processes, student: Any) -> None:
    host = tuned_server(
        processes, "ws-1", sndbuf=SMALL_BUFFER, REALTIME_SEND_TIMEOUT_SECONDS="60", REALTIME_REGISTRY_TTL_SECONDS="2"
    )
    relay_up(processes)
    with StreamClient(host, token=token(student), after=0, reading=False, rcvbuf=SMALL_BUFFER):
        emit(student, 800, per_commit=200)
        code, report = verdict_becomes(student, "socket_stalled", timeout=60)
        assert code == 1
        message = report["verdict"]["message"]
        socket = report["sockets"][0]
        assert socket["send_blocked_since"] is not None
        assert "events behind and has not read for" in message
        assert f"it will be dropped after 1m 00s blocked and resume with after={socket['last_sent']}" in message
        assert f"is {800 - socket['last_sent']} events behind" in message


def test_relay_stopped_with_events_committed(processes: Processes, student: Any) -> None:
    host = processes.server("ws-1")
    with StreamClient(host, token=token(student), after=0):
        emit(student, 2)
        let_time_pass(60)  # the events have waited a minute; no relay ever claimed them
        code, report = verdict_becomes(student, "not_delivered")
        assert code == 1
        message = report["verdict"]["message"]
        assert message.startswith("#1..#2 committed but not pushed: ")
        assert "is `manage.py run_relay` running?" in message
        assert [d["status"] for d in report["stream"]["open_deliveries"]] == ["pending", "pending"]
        relay_up(processes)  # the fix: the same trace then says current
        code, report = verdict_becomes(student, "current")
        assert code == 0


def test_redis_unreachable_for_the_push(processes: Processes, student: Any) -> None:
    host = processes.server("ws-1")
    # The relay's Redis is a port nobody listens on; the ws process and the trace use the real one.
    relay_up(processes, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    with StreamClient(host, token=token(student), after=0):
        emit(student)
        code, report = verdict_becomes(student, "push_failing")
    assert code == 1
    message = report["verdict"]["message"]
    assert message.startswith("#1 not pushed: realtime delivery failing since ")
    assert "UTC (" in message and "ago)" in message
    assert "Connection refused" in message or "Error" in message, message
    assert f"Run `manage.py outbox retry --student {student.pk}` after the fix." in message
    head = report["stream"]["open_deliveries"][0]
    assert head["sink"] == "realtime" and head["attempts"] >= 1 and head["last_error"].startswith("realtime: ")


def test_a_dead_handler_delivery_ahead_of_the_stream(
    processes: Processes, student: Any, course: Course, trainer: Any, tmp_path: Path
) -> None:
    """Processes with the chaos suite's poisonable handler: it fails for `poison*` payments while the
    flag file exists; with OUTBOX_MAX_ATTEMPTS=1 its first failure dead-letters the delivery."""
    flag = tmp_path / "poison.flag"
    flag.write_text("on")
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.chaos.settings",
        "CHAOS_POISON_FLAG": str(flag),
        "OUTBOX_MAX_ATTEMPTS": "1",
    }
    host = processes.server("ws-1", None, **env)
    relay_up(processes, **env)
    processes.worker("worker", **env)
    with StreamClient(host, token=token(student), after=0) as app:
        body = webhook_body(payment_id="poison_1", student_id=student.pk, course_id=course.pk)
        status, answer = post_webhook(host, body)
        assert status == 200, answer
        code, report = verdict_becomes(student, "handler_stuck", timeout=60)
        assert code == 1
        message = report["verdict"]["message"]
        assert "the follow-up of #1 purchase.created did not run" in message
        assert "dead-lettered: chaos.poison failed once: RuntimeError: poisoned payment poison_1" in message
        dead = [d for d in report["stream"]["open_deliveries"] if d["status"] == "dead"]
        assert [d["sink"] for d in dead] == ["chaos.poison"]
        assert f"outbox retry --id {dead[0]['id']}" in message
        assert app.last_seq() == report["stream"]["last_seq"]  # the app itself is current


def test_a_killed_ws_process_entries_expire_from_the_trace(processes: Processes, student: Any) -> None:
    env = {"REALTIME_REGISTRY_TTL_SECONDS": "2"}
    ws1, ws2 = processes.server("ws-1", None, **env), processes.server("ws-2", None, **env)
    relay_up(processes)
    with StreamClient(ws1, token=token(student), after=0) as alive, StreamClient(ws2, token=token(student), after=0):
        emit(student)
        alive.wait_for_seq(1)
        _, report = verdict_becomes(student, "current")
        assert len(report["sockets"]) == 2
        killed = processes.procs["ws-2"]
        killed.kill()
        killed.wait()
        started = time.monotonic()
        wait_until(lambda: len(trace(student)[1]["sockets"]) == 1, timeout=15, what="the killed process's entry gone")
        print(f"entries of the killed ws process gone from the trace after {time.monotonic() - started:.1f}s")
        code, report = trace(student)
        assert code == 0
        assert report["verdict"]["message"] == "current: 1 socket(s) at seq 1 of 1"
        assert report["sockets"][0]["process"].endswith(f":{processes.procs['ws-1'].pid}")
