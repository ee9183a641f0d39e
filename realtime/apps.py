from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"

    def ready(self) -> None:
        from realtime import redact

        # Tokens travel in the WebSocket URL (browsers can't set headers): keep them out of the logs.
        redact.install()
