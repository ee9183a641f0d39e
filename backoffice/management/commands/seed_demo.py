import json
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from flows import demo


class Command(BaseCommand):
    help = "Create demo courses, trainers and students with API tokens (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print what exists as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        summary = demo.seed_demo()
        if options["json"]:
            self.stdout.write(json.dumps(summary, default=lambda v: str(v) if isinstance(v, Decimal) else v))
            return
        for student in summary["students"]:
            self.stdout.write(f"student {student['id']} {student['email']} token={student['token']}")
        for course in summary["courses"]:
            self.stdout.write(f"course {course['id']} {course['title']}")
        for trainer in summary["trainers"]:
            self.stdout.write(
                f"trainer {trainer['id']} {trainer['name']} capacity={trainer['capacity']} "
                f"timezone={trainer['timezone']}"
            )
