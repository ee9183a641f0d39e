"""Cross-app flows: what spans purchases, allocation and sessions in one transaction (a payment
provider's event, a refund, a move). Above the three apps, which never import it."""
