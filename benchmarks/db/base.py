"""Benchmark-only database backend: the product's PostgreSQL backend, plus the wall clock at which each
connection last sent COMMIT (read by `benchmarks.middleware.commit_stamp`). Used only with
BENCH_COMMIT_STAMP=1 (see `benchmarks.settings`)."""

import time

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    commit_sent_at: float | None = None

    def commit(self) -> None:
        self.commit_sent_at = time.time()
        super().commit()
