"""`manage.py outbox status | retry | purge`: lag and backlog per sink, requeue, retention.

Thin: `outbox.operations` does the work (the admin's retry action uses the same function).
"""

import json
import os
import re
import sys
import time
from argparse import ArgumentTypeError
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.utils import timezone

from backoffice.trace import duration
from outbox import operations, verdict
from outbox.relay_status import unreachable_relays

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `12h`, `7d`, `2w`: the unit is required (is a bare `7` days or seconds?)."""
    match = _DURATION.match(text)
    if not match:
        raise ArgumentTypeError(f"invalid duration {text!r}: give a unit, e.g. 90s, 30m, 12h, 7d, 2w")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _env_default(name: str, default: str) -> str:
    return os.environ.get(name) or default


def non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(text)


def positive_int(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value <= 0:
        raise ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


class ProgressBar:
    """Plain-text progress on stderr: redrawn in place on a terminal, a line a second otherwise."""

    def __init__(self, label: str, *, stream: OutputWrapper, approximate: bool = False) -> None:
        self.label = label
        self.approximate = approximate
        self.stream = stream
        self.tty = stream.isatty()
        self._last_line = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self.tty and now - self._last_line < 1.0:
            return
        self._last_line = now
        self._draw(done, total, end="\r" if self.tty else "\n")

    def finish(self, done: int, total: int | None) -> None:
        self.approximate = False
        self._draw(done, total, end="\n")

    def _draw(self, done: int, total: int | None, *, end: str) -> None:
        if total:
            share = min(done / total, 1.0)
            bar = "#" * int(share * 30)
            text = f"{self.label} [{bar:<30}] {done:,}/{'~' if self.approximate else ''}{total:,} ({share:.0%})"
        else:
            text = f"{self.label} {done:,}"
        self.stream.write(text + end, ending="")
        self.stream.flush()


class Command(BaseCommand):
    help = "Outbox operations: `status` (lag, due, in-flight, dead per sink), `retry` (requeue), `purge` (retention)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="status|retry|purge")
        status = actions.add_parser("status", help="Lag and open deliveries per sink.")
        status.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        status.add_argument(
            "--check",
            action="store_true",
            help="Exit 0 OK, 1 WARNING, 2 CRITICAL (past a threshold), 3 UNKNOWN (database unreachable).",
        )
        status.add_argument(
            "--max-lag",
            type=parse_duration,
            default=_env_default("OUTBOX_CHECK_MAX_LAG", "60s"),
            help="Lag past this warns, past twice this is critical (env OUTBOX_CHECK_MAX_LAG, default 60s).",
        )
        status.add_argument(
            "--max-dead",
            type=non_negative_int,
            default=_env_default("OUTBOX_CHECK_MAX_DEAD", "0"),
            help="More dead-lettered deliveries than this is critical (env OUTBOX_CHECK_MAX_DEAD, default 0).",
        )
        status.add_argument(
            "--no-relay-ok",
            action="store_true",
            default=_env_default("OUTBOX_CHECK_NO_RELAY_OK", "0") in {"1", "true", "yes"},
            help="Do not count a missing relay heartbeat (env OUTBOX_CHECK_NO_RELAY_OK=1).",
        )

        retry = actions.add_parser("retry", help="Requeue dead (and optionally failing) deliveries.")
        retry.add_argument("--id", dest="ids", type=positive_int, action="append", help="Delivery id (repeatable).")
        retry.add_argument("--sink", help="Only this sink, e.g. realtime or sessions.generate.")
        retry.add_argument("--student", type=positive_int, help="Only this student's deliveries.")
        retry.add_argument(
            "--failing",
            action="store_true",
            help="Also requeue pending deliveries that are backing off after a failure.",
        )
        retry.add_argument("--batch-size", type=positive_int, default=500)
        retry.add_argument("--dry-run", action="store_true", help="Count what would be requeued; change nothing.")
        retry.add_argument(
            "--yes", action="store_true", help="Requeue without asking (needed for an unfiltered retry)."
        )

        purge = actions.add_parser("purge", help="Delete delivered events older than --older-than.")
        purge.add_argument(
            "--older-than", type=parse_duration, default=timedelta(days=7), help="e.g. 12h, 7d, 2w (default 7d)."
        )
        purge.add_argument("--batch-size", type=positive_int, default=1000)
        purge.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "status":
            self._status(options)
        elif action == "retry":
            self._retry(options)
        else:
            self._purge(options)

    def _status(self, options: dict[str, Any]) -> None:
        unreachable = verdict.database_unreachable()
        if unreachable:
            self.stdout.write(f"UNKNOWN: {unreachable}")
            sys.exit(verdict.UNKNOWN if options["check"] else 1)
        rows, relays = operations.outbox_status(), operations.relays_status()
        limits = verdict.Thresholds(
            max_lag=options["max_lag"], max_dead=options["max_dead"], require_relay=not options["no_relay_ok"]
        )
        cannot_connect = unreachable_relays()
        judged = verdict.judge(rows, relays, limits, cannot_connect=len(cannot_connect))
        self._status_report(rows, relays, judged, cannot_connect, as_json=options["json"])
        if options["check"] and judged.code != verdict.OK:
            sys.exit(judged.code)

    def _status_report(
        self,
        rows: list[operations.SinkStatus],
        relays: list[operations.RelayStatus],
        judged: verdict.Verdict,
        unreachable: list[dict[str, Any]],
        *,
        as_json: bool,
    ) -> None:
        if as_json:
            sinks = [
                {
                    "sink": r.sink,
                    "lag_seconds": round(r.lag.total_seconds(), 3),
                    "due": r.due,
                    "scheduled": r.scheduled,
                    "in_flight": r.in_flight,
                    "dead": r.dead,
                    "failing": r.failing,
                }
                for r in rows
            ]
            beats = [
                {"relay_id": b.relay_id, "beat_at": b.beat_at.isoformat(), "alive": b.alive, "claimed": b.claimed_total}
                for b in relays
            ]
            summary = {"code": judged.code, "state": verdict.NAMES[judged.code], "line": judged.line}
            self.stdout.write(
                json.dumps({"verdict": summary, "sinks": sinks, "relays": beats, "relays_cannot_connect": unreachable})
            )
            return
        self.stdout.write(judged.line)
        header = f"{'sink':32} {'lag':>9} {'due':>7} {'scheduled':>9} {'in flight':>9} {'failing':>7} {'dead':>6}"
        self.stdout.write(header)
        for r in rows:
            counts = f"{r.due:>7} {r.scheduled:>9} {r.in_flight:>9} {r.failing:>7} {r.dead:>6}"
            self.stdout.write(f"{r.sink:32} {duration(r.lag):>9} {counts}")
        now = timezone.now()
        for b in relays:
            state = "alive" if b.alive else "GONE"
            self.stdout.write(
                f"relay {b.relay_id}: {state}, last beat {duration(now - b.beat_at)} ago, "
                f"claimed {b.claimed_total} since {b.started_at:%Y-%m-%d %H:%M:%S}"
            )
        for u in unreachable:
            self.stdout.write(
                f"relay {u['relay_id']}: CANNOT CONNECT to the database for {u['for_seconds']:.0f} s: {u['cause']}"
            )
        if not any(b.alive for b in relays):
            self.stdout.write("no relay is alive: is `manage.py run_relay` running?")
        dead = sum(r.dead for r in rows)
        if dead:
            self.stdout.write(f"{dead} dead-lettered: see `manage.py trace <payment_id>`, then `outbox retry`.")

    def _retry(self, options: dict[str, Any]) -> None:
        sink, student = options["sink"], options["student"]
        if sink is not None and sink not in operations.known_sinks():
            raise CommandError(f"unknown sink {sink!r}; known: {', '.join(sorted(operations.known_sinks()))}")
        if student is not None and not get_user_model().objects.filter(id=student).exists():
            raise CommandError(f"unknown student {student}")
        selection = {
            "ids": options["ids"],
            "sink": sink,
            "student_id": student,
            "include_failing": options["failing"],
            "batch_size": options["batch_size"],
        }
        try:
            planned = operations.deliveries_retry(**selection, dry_run=True)
        except operations.UnknownDeliveries as exc:
            raise CommandError(f"{exc}; nothing was requeued") from exc
        if options["dry_run"]:
            self.stdout.write(f"would requeue {planned.requeued} deliveries (dry run: nothing changed)")
            return
        unfiltered = options["ids"] is None and sink is None and student is None
        if unfiltered and planned.requeued and not options["yes"]:
            self._confirm(
                f"requeue all {planned.requeued} dead{' and failing' if options['failing'] else ''} deliveries"
            )
        progress = ProgressBar("requeue", stream=self.stderr)
        result = operations.deliveries_retry(**selection, on_progress=progress)
        if result.requeued:
            progress.finish(result.requeued, result.requeued)
        if result.skipped_ids:
            self.stderr.write(
                f"not requeued (done or in flight, nothing to retry): {', '.join(map(str, result.skipped_ids))}"
            )
        self.stdout.write(f"requeued {result.requeued} deliveries; a running relay picks them up now")

    def _confirm(self, what: str) -> None:
        """Ask on a terminal; refuse without one (cron, a pipe), where only --yes can say yes."""
        if not sys.stdin or not sys.stdin.isatty():
            raise CommandError(f"refusing to {what} without confirmation: no terminal to ask; pass --yes")
        answer = input(f"{what}? [y/N] ").strip().lower()
        if answer not in {"y", "yes"}:
            raise CommandError("not confirmed; nothing was requeued")

    def _purge(self, options: dict[str, Any]) -> None:
        progress = ProgressBar("purge: scanned", stream=self.stderr, approximate=True)
        result = operations.events_purge(
            older_than=options["older_than"],
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
            on_progress=progress,
        )
        if result.scanned:
            progress.finish(result.scanned, result.scanned)
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(
            f"{verb} {result.events} delivered events older than {duration(options['older_than'])} "
            f"(of {result.scanned} scanned; {result.deliveries} deliveries, {result.inbox_entries} inbox entries)"
        )
