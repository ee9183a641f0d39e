"""Benchmark-only middleware (see `benchmarks.settings`)."""

import time
from collections.abc import Callable
from typing import Any

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse

COMMIT_SENT_HEADER = "X-Bench-Commit-Sent-At"
COMMITTED_HEADER = "X-Bench-Committed-At"


def commit_stamp(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Stamp each response with the wall clock when the request's transaction sent its COMMIT (the
    webhook has one: the one that writes `purchase.created`) and when that COMMIT returned.

    An `on_commit` callback, registered by the first statement run inside `atomic()`, reads both in
    the committing thread right after COMMIT returned: the second from the clock, the first from the
    connection (`benchmarks.db` notes the clock as it sends COMMIT). PostgreSQL makes the event visible
    to other sessions as its COMMIT returns, so the latency benchmark measures from the second; the
    first adds the COMMIT's own disk flush, and the benchmark shows that bound too. Without a
    transaction, both are the clock after the view.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        stamps: list[tuple[float, float]] = []
        watching = [True]

        def committed() -> None:
            returned = time.time()
            stamps.append((getattr(connection, "commit_sent_at", None) or returned, returned))

        def watch(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
            # Not by the SQL's text: emit() writes the event inside a CTE, and statements change.
            if watching[0] and connection.in_atomic_block:
                watching[0] = False
                transaction.on_commit(committed)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(watch):
            response = get_response(request)
        sent, returned = stamps[0] if stamps else (time.time(),) * 2
        response[COMMIT_SENT_HEADER] = repr(sent)
        response[COMMITTED_HEADER] = repr(returned)
        return response

    return middleware
