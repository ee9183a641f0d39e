"""The webhook's counters, exported at /metrics (prometheus_client multi-process mode, like the relay's)."""

from prometheus_client import Counter

WEBHOOK_CONFLICTS = Counter(
    "payment_webhook_conflicts_total",
    "Signed provider events refused as conflicting: payment_conflict, event_conflict, refund_mismatch.",
    ["code"],
)
