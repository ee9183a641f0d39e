"""`outbox status`'s one-line verdict, and the thresholds `--check` judges it by (for cron and monitoring).

Exit statuses follow the monitoring-plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the
database could not be asked). Dead letters and a missing relay are critical: nothing is lost, but a
student's stream waits until an operator acts. Lag past its threshold is a warning; past twice
the threshold, critical.
"""

import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from django.db import connection

from outbox.models import RELAY_ALIVE_WITHIN
from outbox.operations import RelayStatus, SinkStatus

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
PROBE_TIMEOUT_SECONDS = 1.0  # how long `outbox status` waits for the database to answer


@dataclass(frozen=True)
class Thresholds:
    max_lag: timedelta
    max_dead: int
    require_relay: bool


@dataclass(frozen=True)
class Verdict:
    code: int
    line: str


def judge(rows: list[SinkStatus], relays: list[RelayStatus], limits: Thresholds, *, cannot_connect: int = 0) -> Verdict:
    """One line: the worst finding first, every finding named, with the numbers that crossed.
    `cannot_connect`: relays that report (outbox.relay_status) they cannot reach the database."""
    findings: list[tuple[int, str]] = []
    if cannot_connect:
        findings.append((CRITICAL, f"{cannot_connect} relay(s) cannot connect to the database"))
    dead = sum(r.dead for r in rows)
    if dead > limits.max_dead:
        findings.append((CRITICAL, f"{dead} dead-lettered deliveries (max {limits.max_dead})"))
    if limits.require_relay and not any(b.alive for b in relays):
        within = RELAY_ALIVE_WITHIN.total_seconds()
        findings.append((CRITICAL, f"no relay alive (no heartbeat within {within:.0f} s)"))
    worst = max(rows, key=lambda r: r.lag, default=None)
    if worst is not None and worst.lag > limits.max_lag:
        level = CRITICAL if worst.lag > 2 * limits.max_lag else WARNING
        findings.append((level, f"lag {_seconds(worst.lag)} on {worst.sink} (max {_seconds(limits.max_lag)})"))
    open_count = sum(r.due + r.scheduled + r.in_flight for r in rows)
    alive = sum(1 for b in relays if b.alive)
    summary = f"{open_count} open deliveries, {dead} dead, {alive} relay(s) alive"
    if not findings:
        lag = _seconds(worst.lag) if worst else "0s"
        return Verdict(OK, f"OK: {summary}, max lag {lag}")
    findings.sort(key=lambda f: -f[0])
    code = findings[0][0]
    return Verdict(code, f"{NAMES[code]}: {'; '.join(text for _, text in findings)} ({summary})")


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():.0f}s"


def database_unreachable() -> str | None:
    """Why the database cannot be reached, within about a second (None when it answers).

    One real connection outside the pool, so a refused login or a missing database is named too; it
    runs in a daemon thread that is given PROBE_TIMEOUT_SECONDS, because libpq's connect_timeout cannot
    go below 2 s (and is spent again for each SSL mode it tries), and the pool would wait
    DB_POOL_TIMEOUT_SECONDS (20 s) before saying anything.
    """
    params: dict[str, Any] = connection.get_connection_params()
    for unused in ("pool", "cursor_factory", "context"):
        params.pop(unused, None)
    where = f"{params.get('host') or 'local socket'}:{params.get('port') or 5432}"
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            with psycopg.connect(**{**params, "connect_timeout": 2}):
                outcome.append(None)
        except psycopg.Error as exc:
            text = str(exc).strip()
            outcome.append(" ".join(line.strip() for line in text.splitlines()) or type(exc).__name__)

    started = time.monotonic()
    probe = threading.Thread(target=attempt, name="database-probe", daemon=True)
    probe.start()
    probe.join(PROBE_TIMEOUT_SECONDS)
    if not outcome:
        return f"database unreachable at {where}: no answer within {time.monotonic() - started:.1f}s (connect timeout)"
    return None if outcome[0] is None else f"database unreachable at {where}: {outcome[0]}"
