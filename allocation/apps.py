from django.apps import AppConfig


class AllocationConfig(AppConfig):
    name = "allocation"

    def ready(self) -> None:
        from allocation import handlers  # noqa: F401  (registers the outbox subscriptions)
