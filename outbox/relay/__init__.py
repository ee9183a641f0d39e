"""The relay: the only path from committed outbox events to side effects.

Loop (`loop.Relay`): claim a batch of due deliveries (one short transaction, leased), then, with no
transaction open, (1) invalidate the affected students' read models and (2) push their events to their
Channels groups (`push`), (3) enqueue one Celery task per handler for its share of the batch; then
settle. A relay killed at any point leaves leases that expire and are claimed again: at-least-once
delivery, made exactly-once by the inbox (handlers) and by idempotent effects (cache floor, seq-tagged
pushes). Beside the loop: its heartbeat (`heartbeat`), the LISTEN connection that wakes it (`listen`)
and the log line of a slow batch (`slow_batches`). See docs/architecture.md.
"""

from outbox.relay.loop import Relay

__all__ = ["Relay"]
