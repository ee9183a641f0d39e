"""`manage.py trace <payment_id>`: the payment's chain of events and deliveries, and a verdict.

`manage.py trace --student <id> [--json] [--resync]`: the student's stream, cache and open sockets, with
a verdict first (backoffice/student_trace.py); exits 0 when the student is current, 1 otherwise.
"""

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.student_trace import student_trace
from backoffice.student_trace_render import student_trace_json, student_trace_text
from backoffice.trace import DELIVERED, IN_PROGRESS, STUCK, Trace, payment_trace, trace_json
from outbox.models import Delivery
from outbox.payment_records import PaymentRecord, records_of
from purchases.errors import UnknownStudent
from purchases.services import student_resync_request


class Command(BaseCommand):
    help = (
        "Why didn't the app update? By payment: every event of its chain and each delivery's state. "
        "By student (--student): stream, cache, open sockets and a verdict (exit 0 only when current)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("payment_id", nargs="?", help="The provider's payment id (the chain's correlation id).")
        parser.add_argument("--student", type=int, help="Trace a student instead of a payment.")
        parser.add_argument("--resync", action="store_true", help="With --student: request a resync, then trace.")
        parser.add_argument("--json", action="store_true", help="Print the trace as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["student"] is not None:
            if options["payment_id"]:
                raise CommandError("give a payment id or --student, not both")
            self._student(options["student"], as_json=options["json"], resync=options["resync"])
            return
        if options["resync"]:
            raise CommandError("--resync needs --student")
        payment_id = (options["payment_id"] or "").strip()
        if not payment_id:
            raise CommandError("payment id must not be empty")
        trace = payment_trace(payment_id=payment_id)
        records = records_of(payment_id)
        if trace is None:
            if records and not options["json"]:
                self.stdout.write(records_text(records))
            raise CommandError(f"no events for payment {payment_id!r}: unknown payment id, or its history was purged")
        if options["json"]:
            self.stdout.write(json.dumps({**trace_json(trace), "provider_events": [r.fields for r in records]}))
        else:
            self.stdout.write("\n\n".join(filter(None, [records_text(records), trace_text(trace)])))

    def _student(self, student_id: int, *, as_json: bool, resync: bool) -> None:
        if resync:
            try:
                event = student_resync_request(student_id=student_id, actor="command:trace")
            except UnknownStudent as exc:
                raise CommandError(f"unknown student {student_id}") from exc
            if not as_json:
                self.stdout.write(f"resync requested (#{event.seq} student.resync_requested); tracing:\n")
        trace = student_trace(student_id=student_id)
        if trace is None:
            raise CommandError(f"unknown student {student_id}")
        self.stdout.write(json.dumps(student_trace_json(trace)) if as_json else student_trace_text(trace))
        if not trace.verdict.current:
            raise SystemExit(1)


def records_text(records: list[PaymentRecord]) -> str:
    """What the payment provider sent for this payment, each with its exact bytes."""
    if not records:
        return ""
    lines = [f"Received from the payment provider ({len(records)}):"]
    for record in records:
        lines += [f"  {record.summary}", f"    body: {record.body}"]
    return "\n".join(lines)


def _clock(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d}"


def trace_text(trace: Trace) -> str:
    """The trace as plain text, for the terminal (the admin renders the same `Trace` as HTML)."""
    lines = [f"Payment {trace.payment_id}: {len(trace.events)} event(s), traced at {trace.at:%Y-%m-%d %H:%M:%S} UTC"]
    for e in trace.events:
        cause = e.caused_by or (str(e.causation_id) if e.causation_id else "-")
        lines.append("")
        lines.append(f"#{e.seq} {e.type}  student {e.student_id}  at {_clock(e.created_at)}")
        lines.append(f"    actor {e.actor}  caused by {cause}  id {e.id}")
        for d in e.deliveries:
            holder = (
                "claimed by" if d.status in (Delivery.Status.IN_FLIGHT, Delivery.Status.DONE) else "last claimed by"
            )
            claimed = f" {holder} {d.claimed_by}" if d.claimed_by else ""
            lines.append(f"    [{d.status:9}] delivery {d.id} -> {d.sink}, attempts {d.attempts}{claimed}")
            if d.state != DELIVERED or d.last_error:
                lines.append(f"                {d.note}")
    marker = {DELIVERED: "OK", IN_PROGRESS: "IN PROGRESS", STUCK: "STUCK"}[trace.verdict.state]
    lines += ["", f"Verdict: {marker}: {trace.verdict.message}"]
    return "\n".join(lines)
