from django.apps import AppConfig


class BenchmarksConfig(AppConfig):
    name = "benchmarks"
    label = "benchmarks"

    def ready(self) -> None:
        # Registered on import: the no-op handler, and the naive chain's Celery tasks.
        from benchmarks import handlers, naive_chain  # noqa: F401
