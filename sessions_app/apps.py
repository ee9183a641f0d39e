from django.apps import AppConfig

from outbox.registry import declare_event_type


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    label = "sessions_app"
    verbose_name = "Training sessions"

    def ready(self) -> None:
        from sessions_app import handlers  # noqa: F401  (registers the outbox subscriptions)

        declare_event_type(
            "sessions.generated", outcome="the purchase is active, its trainer allocated and its sessions scheduled"
        )
        declare_event_type("session.rescheduled")
        declare_event_type("sessions.cancelled", outcome="the purchase is refunded and its future sessions cancelled")
