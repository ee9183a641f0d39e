from django.apps import AppConfig

from outbox.registry import declare_event_type


class AllocationConfig(AppConfig):
    name = "allocation"

    def ready(self) -> None:
        from allocation import handlers  # noqa: F401  (registers the outbox subscriptions)

        declare_event_type("trainer.allocated", outcome="the purchase is active with its trainer")
        declare_event_type(
            "allocation.waitlisted",
            outcome="the purchase is waitlisted: no trainer had free capacity (re-run allocation later)",
        )
