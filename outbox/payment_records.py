"""What apps above the outbox know of a payment, for `trace <payment_id>`, without the outbox
importing them: an app registers a provider at start-up (purchases: the webhook's records, each
with the provider's exact bytes)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PaymentRecord:
    summary: str  # one line: when, what, the outcome
    body: str  # the provider's exact bytes as text
    fields: dict[str, Any]  # JSON-able, for `trace --json`


Provider = Callable[[str], list[PaymentRecord]]
_providers: list[Provider] = []


def register(provider: Provider) -> None:
    """Add `provider(payment_id) -> records` (idempotent)."""
    if provider not in _providers:
        _providers.append(provider)


def records_of(payment_id: str) -> list[PaymentRecord]:
    return [record for provider in _providers for record in provider(payment_id)]
