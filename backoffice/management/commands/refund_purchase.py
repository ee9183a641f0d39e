"""`manage.py refund_purchase <payment_id>`: the admin's refund action, through the same service.

The purchase becomes `refunded`, its trainer's place is freed in the same transaction, and
`purchase.refunded` is emitted: the relay cancels future sessions, promotes the waitlist and updates
the student's app. Idempotent.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.management.commands._errors import command_errors
from flows import refunds

ACTOR = "command:refund_purchase"


class Command(BaseCommand):
    help = "Refund the purchase of a payment (frees the trainer, cancels future sessions); idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("payment_id", help="The provider's payment id.")

    def handle(self, *args: Any, **options: Any) -> None:
        payment_id: str = options["payment_id"].strip()
        if not payment_id:
            raise CommandError("payment id must not be empty")
        with command_errors():
            result = refunds.purchase_refund(payment_id=payment_id, actor=ACTOR)
        if not result.refunded:
            self.stdout.write(f"purchase {result.purchase.pk} of payment {payment_id!r} was already refunded")
            return
        self.stdout.write(
            f"refunded purchase {result.purchase.pk} of payment {payment_id!r} and emitted purchase.refunded: "
            f"the trainer's place and the future sessions' slots are free. "
            f"Follow it with `manage.py trace {payment_id}`."
        )
