"""`manage.py revoke_token <student_id> [--json]`: rotate the student's API token.

The old token stops working at once (REST: 401); through the relay, every socket opened with it closes
with 4401 within about a second. `--json` prints `{"student_id": <id>, "token": "<new token>"}`.
"""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from purchases import services
from purchases.errors import UnknownStudent

ACTOR = "command:revoke_token"


class Command(BaseCommand):
    help = "Rotate a student's API token: the old one stops working and its open sockets are closed (4401)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("student_id", type=int, help="Student (user) id.")
        parser.add_argument("--json", action="store_true", help='Print {"student_id": ..., "token": ...}.')

    def handle(self, *args: Any, **options: Any) -> None:
        student_id: int = options["student_id"]
        try:
            rotation = services.student_token_revoke(student_id=student_id, actor=ACTOR)
        except UnknownStudent as exc:
            raise CommandError(f"unknown student {student_id}: {exc.message}") from exc
        if options["json"]:
            self.stdout.write(json.dumps({"student_id": rotation.student_id, "token": rotation.token}))
            return
        self.stdout.write(
            f"student {student_id}: new token {rotation.token}\n"
            f"the old token no longer authenticates; its open sockets close with 4401 once the relay delivers "
            f"{services.TOKEN_REVOKED}"
        )
