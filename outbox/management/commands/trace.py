"""`manage.py trace <payment_id>`: the payment's chain of events and deliveries, and a verdict."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from outbox.trace import Trace, payment_trace, trace_text


class Command(BaseCommand):
    help = "Why didn't the app update? Every event of a payment's chain, each delivery's state, and a verdict."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("payment_id", help="The provider's payment id (the chain's correlation id).")
        parser.add_argument("--json", action="store_true", help="Print the trace as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        payment_id = options["payment_id"].strip()
        if not payment_id:
            raise CommandError("payment id must not be empty")
        trace = payment_trace(payment_id=payment_id)
        if trace is None:
            raise CommandError(f"no events for payment {payment_id!r}: unknown payment id, or its history was purged")
        self.stdout.write(json.dumps(trace_json(trace)) if options["json"] else trace_text(trace))


def trace_json(trace: Trace) -> dict[str, Any]:
    return {
        "payment_id": trace.payment_id,
        "verdict": {"state": trace.verdict.state, "message": trace.verdict.message},
        "events": [
            {
                "id": str(e.id),
                "seq": e.seq,
                "type": e.type,
                "actor": e.actor,
                "student_id": e.student_id,
                "causation_id": str(e.causation_id) if e.causation_id else None,
                "created_at": e.created_at.isoformat(),
                "deliveries": [
                    {
                        "id": d.id,
                        "sink": d.sink,
                        "status": d.status,
                        "attempts": d.attempts,
                        "last_error": d.last_error,
                        "available_at": d.available_at.isoformat(),
                        "claimed_by": d.claimed_by,
                        "done_at": d.done_at.isoformat() if d.done_at else None,
                        "state": d.state,
                        "note": d.note,
                    }
                    for d in e.deliveries
                ],
            }
            for e in trace.events
        ],
    }
