from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    label = "sessions_app"
    verbose_name = "Training sessions"

    def ready(self) -> None:
        from sessions_app import handlers  # noqa: F401  (registers the outbox subscriptions)
