import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from outbox.relay import Relay


class Command(BaseCommand):
    help = "Deliver outbox events: invalidate caches, push to sockets, enqueue handlers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Drain what is due now, then exit.")
        parser.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        relay = Relay(batch_size=options["batch_size"])
        if options["once"]:
            started_at = timezone.now()
            delivered = relay.drain()
            relay.beat(started_at=started_at, claimed_total=delivered)
            self.stdout.write(f"claimed {delivered} deliveries")
            return
        signal.signal(signal.SIGTERM, lambda *_: relay.stop())
        signal.signal(signal.SIGINT, lambda *_: relay.stop())
        relay.run_forever()
