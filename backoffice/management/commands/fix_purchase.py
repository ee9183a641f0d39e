"""`manage.py fix_purchase <payment_id> --student <id> --course <id> [--amount] [--currency]`, and
`manage.py fix_purchase <payment_id> --move-to-course <id>` (refund and new purchase in one transaction).

The operator's manual fix goes through `purchase_create`, the webhook's own service: the purchase and
its `purchase.created` event commit together, so the relay allocates a trainer, schedules sessions,
invalidates the student's cache and updates their app exactly as for a webhook.
"""

import re
from argparse import ArgumentTypeError
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.management.commands._errors import command_errors
from flows import moves
from purchases import services
from purchases.models import Course

ACTOR = "command:fix_purchase"


def amount(text: str) -> Decimal:
    """A payment amount as the Payment model stores it: 0 <= amount < 10^8, at most 2 decimals."""
    try:
        value = Decimal(text)
        valid = value.is_finite() and 0 <= value < Decimal("1e8") and value == value.quantize(Decimal("0.01"))
    except InvalidOperation:
        valid = False
    if not valid:
        raise ArgumentTypeError(f"invalid amount {text!r}: a number from 0 to 99999999.99 with at most 2 decimals")
    return value


def currency(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{3}", text):
        raise ArgumentTypeError(f"invalid currency {text!r}: an ISO 4217 code such as EUR")
    return text.upper()


class Command(BaseCommand):
    help = "Create the purchase for a payment through the webhook's service (idempotent by payment id)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("payment_id", help="The provider's payment id.")
        parser.add_argument("--student", type=int, help="Student (user) id (required unless --move-to-course).")
        parser.add_argument("--course", type=int, help="Course id (required unless --move-to-course).")
        parser.add_argument(
            "--move-to-course",
            type=int,
            metavar="COURSE_ID",
            help="Move the payment's purchase to this course: refund it and create the new purchase in one "
            "transaction, one chain of events (`trace <payment_id>` shows both).",
        )
        parser.add_argument("--amount", type=amount, help="Amount paid (default: the course's price).")
        parser.add_argument("--currency", type=currency, help="ISO 4217 code (default: the course's currency).")

    def handle(self, *args: Any, **options: Any) -> None:
        payment_id: str = options["payment_id"].strip()
        if not payment_id:
            raise CommandError("payment id must not be empty")
        if options["move_to_course"] is not None:
            self._move(payment_id, options["move_to_course"])
            return
        student_id: int | None = options["student"]
        course_id: int | None = options["course"]
        if student_id is None or course_id is None:
            raise CommandError("--student and --course are required (or --move-to-course to move a purchase)")
        course = Course.objects.filter(id=course_id).first()
        if course is None:
            raise CommandError(f"unknown course {course_id}: no course with this id")
        with command_errors():
            result = services.purchase_create(
                payment_id=payment_id,
                student_id=student_id,
                course_id=course_id,
                amount=options["amount"] if options["amount"] is not None else course.price,
                currency=options["currency"] or course.currency,
                actor=ACTOR,
            )
        purchase = result.purchase
        if not result.created:
            if (purchase.student_id, purchase.course_id) != (student_id, course_id):
                # Idempotent for the same fix; a different one would silently do nothing, so say so.
                raise CommandError(
                    f"payment {payment_id!r} already has purchase {purchase.pk} for student {purchase.student_id}, "
                    f"course {purchase.course_id}: nothing changed (refund it first if it is wrong)"
                )
            self.stdout.write(
                f"payment {payment_id!r} already has purchase {purchase.pk} ({purchase.status}): nothing changed"
            )
            return
        self.stdout.write(
            f"created purchase {purchase.pk} ({purchase.status}) for payment {payment_id!r} and emitted "
            f"purchase.created: the relay allocates a trainer, schedules sessions and updates the student's app. "
            f"Follow it with `manage.py trace {payment_id}`."
        )

    def _move(self, payment_id: str, course_id: int) -> None:
        with command_errors():
            result = moves.purchase_move(payment_id=payment_id, course_id=course_id, actor=ACTOR)
        purchase = result.purchase
        if not result.created:
            self.stdout.write(f"payment {payment_id!r} was already moved to course {course_id}: purchase {purchase.pk}")
            return
        self.stdout.write(
            f"moved payment {payment_id!r} to course {course_id}: the old purchase is refunded and purchase "
            f"{purchase.pk} ({purchase.status}) created, in one transaction. Follow it with "
            f"`manage.py trace {payment_id}`."
        )
