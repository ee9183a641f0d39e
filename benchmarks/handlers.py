"""A handler that does nothing, so the drain benchmarks measure the outbox machinery itself.

`bench.ping` events get two deliveries, like most domain events: the relay's realtime sink (cache
invalidation + push) and this handler (a Celery task; the runner's inbox row and settle).
"""

from outbox.models import OutboxEvent
from outbox.registry import handles

PING = "bench.ping"
NOOP_HANDLER = "bench.noop"


@handles(PING, name=NOOP_HANDLER)
def noop(event: OutboxEvent) -> None:
    return None
