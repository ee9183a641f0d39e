"""`manage.py reschedule_session <session_id> [--not-before <ISO 8601>] [--json]`.

The operator's move, through the same service as the student's API: the session goes to its
trainer's next free slot (after its current start, or after `--not-before`), and `session.rescheduled`
reaches the student's app through the relay.
"""

import json
from argparse import ArgumentTypeError
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kernel.errors import ApplicationError
from sessions_app.services import iso, session_reschedule

ACTOR = "command:reschedule_session"


def instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ArgumentTypeError(f"invalid time {text!r}: ISO 8601 with an offset, e.g. 2027-03-29T10:00+02:00") from exc
    if value.tzinfo is None:
        raise ArgumentTypeError(f"time {text!r} has no offset: add one, e.g. +00:00")
    return value


class Command(BaseCommand):
    help = "Move a scheduled session to its trainer's next free slot (emits session.rescheduled)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session_id", type=int)
        parser.add_argument("--not-before", type=instant, help="Earliest new start, ISO 8601 with offset.")
        parser.add_argument("--json", action="store_true", help="Print the moved session as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            session = session_reschedule(
                session_id=options["session_id"], actor=ACTOR, not_before=options["not_before"]
            )
        except ApplicationError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        data = {"id": session.pk, "starts_at": iso(session.starts_at), "ends_at": iso(session.ends_at)}
        self.stdout.write(json.dumps(data) if options["json"] else f"session {session.pk} now {data['starts_at']}")
