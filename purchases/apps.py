from django.apps import AppConfig

from outbox.registry import declare_event_type


class PurchasesConfig(AppConfig):
    name = "purchases"

    def ready(self) -> None:
        from outbox import payment_records
        from purchases.selectors import provider_event_records
        from purchases.services import TOKEN_REVOKED

        payment_records.register(provider_event_records)
        declare_event_type("purchase.created")
        declare_event_type("purchase.refunded", outcome="the purchase is refunded")
        declare_event_type("student.resync_requested")
        declare_event_type(TOKEN_REVOKED)
