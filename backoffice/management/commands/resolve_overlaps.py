"""`manage.py resolve_overlaps [--dry-run]`: before `sessions_app` migration 0004, move each
double-booked scheduled session to its trainer's next free slot.

Of two overlapping sessions of one trainer the later-created one moves, through `session_reschedule`
(so `session.rescheduled` reaches the student's app). Give the trainers their availability first.
A session that can't move (it has started, or there is no free slot) is listed and the command
exits non-zero: cancel or move it by hand, then run it again.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from kernel.errors import ApplicationError
from sessions_app.services import iso, session_reschedule

ACTOR = "command:resolve_overlaps"

_LOSERS = """
SELECT DISTINCT b.id FROM sessions_app_trainingsession a
JOIN sessions_app_trainingsession b ON a.trainer_id = b.trainer_id AND a.id < b.id
 AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)
WHERE a.status = 'scheduled' AND b.status = 'scheduled' AND NOT (b.id = ANY(%s))
ORDER BY b.id LIMIT 1
"""


class Command(BaseCommand):
    help = "Move double-booked scheduled sessions to their trainers' next free slots (before migration 0004)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List what would move; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        stuck: list[int] = []
        moved = 0
        while (session_id := self._next_loser(stuck)) is not None:
            if options["dry_run"]:
                self.stdout.write(f"session {session_id} overlaps an earlier one: would move")
                stuck.append(session_id)
                continue
            try:
                session = session_reschedule(session_id=session_id, actor=ACTOR)
            except ApplicationError as exc:
                self.stdout.write(f"session {session_id} not moved: {exc.code}: {exc.message}")
                stuck.append(session_id)
                continue
            moved += 1
            self.stdout.write(f"session {session_id} moved to {iso(session.starts_at)}")
        self.stdout.write(f"{moved} moved, {len(stuck)} {'to move' if options['dry_run'] else 'left'}")
        if stuck and not options["dry_run"]:
            raise CommandError(f"sessions still overlapping: {stuck}")

    @staticmethod
    def _next_loser(skip: list[int]) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute(_LOSERS, [skip])
            row = cursor.fetchone()
        return None if row is None else int(row[0])
