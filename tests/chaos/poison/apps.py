from django.apps import AppConfig


class PoisonConfig(AppConfig):
    name = "tests.chaos.poison"
    label = "chaos_poison"

    def ready(self) -> None:
        from tests.chaos.poison import handlers  # noqa: F401
