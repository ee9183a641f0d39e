"""A handler that always fails for payments named `poison*` while the flag file exists (the "bug"),
and succeeds once it is removed (the "fix")."""

import os
from pathlib import Path

from outbox.models import OutboxEvent
from outbox.registry import handles


@handles("purchase.created", name="chaos.poison")
def fail_on_poisoned_payments(event: OutboxEvent) -> None:
    flag = os.environ.get("CHAOS_POISON_FLAG")
    if str(event.payload.get("payment_id", "")).startswith("poison") and flag and Path(flag).exists():
        raise RuntimeError(f"poisoned payment {event.payload['payment_id']}")
