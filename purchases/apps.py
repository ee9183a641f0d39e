from django.apps import AppConfig


class PurchasesConfig(AppConfig):
    name = "purchases"

    def ready(self) -> None:
        from outbox import payment_records
        from purchases.selectors import provider_event_records

        payment_records.register(provider_event_records)
