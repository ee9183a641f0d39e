from django.apps import AppConfig


class BenchmarksConfig(AppConfig):
    name = "benchmarks"
    label = "benchmarks"

    def ready(self) -> None:
        from benchmarks import handlers  # noqa: F401  (registers the no-op handler)
