"""`manage.py resync_student <student_id>`: emit `student.resync_requested`.

Through the relay, like every side effect: the student's cached views are invalidated and their app
is told to refetch. Safe to repeat.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from purchases import services
from purchases.errors import UnknownStudent

ACTOR = "command:resync_student"


class Command(BaseCommand):
    help = "Invalidate a student's cached views and tell their app to refetch (through the outbox relay)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("student_id", type=int, help="Student (user) id.")

    def handle(self, *args: Any, **options: Any) -> None:
        student_id: int = options["student_id"]
        try:
            services.student_resync_request(student_id=student_id, actor=ACTOR)
        except UnknownStudent as exc:
            raise CommandError(f"unknown student {student_id}: {exc.message}") from exc
        self.stdout.write(
            f"emitted student.resync_requested for student {student_id}: the relay invalidates their cache "
            f"and tells their app to refetch"
        )
