"""Benchmark-only settings: the product's settings plus the `benchmarks` app.

Adds the naive webhook baseline (`benchmarks.naive`, mounted by `benchmarks.urls`) and a no-op handler
for the drain benchmarks' `bench.ping` events (`benchmarks.handlers`). With BENCH_COMMIT_STAMP=1 every
response carries the server's clock when the request's transaction sent its COMMIT and when the COMMIT
returned (`benchmarks.middleware`, `benchmarks.db`), which the latency benchmark measures from. Only
benchmark processes use this module (DJANGO_SETTINGS_MODULE=benchmarks.settings), so none of it is
reachable in the product.
"""

import os

from config.settings import *  # noqa: F403
from config.settings import DATABASES, INSTALLED_APPS, MIDDLEWARE

INSTALLED_APPS = [*INSTALLED_APPS, "benchmarks.apps.BenchmarksConfig"]
ROOT_URLCONF = "benchmarks.urls"
if os.environ.get("BENCH_COMMIT_STAMP") == "1":
    MIDDLEWARE = ["benchmarks.middleware.commit_stamp", *MIDDLEWARE]
    DATABASES["default"]["ENGINE"] = "benchmarks.db"
