"""Benchmark-only middleware (see `benchmarks.settings`)."""

import time
from collections.abc import Callable
from typing import Any

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse

COMMIT_STAMP_HEADER = "X-Bench-Committed-At"


def commit_stamp(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Stamp each response with the wall clock just after the COMMIT of the request's transaction (the
    webhook has one: the one that writes `purchase.created`): an `on_commit` callback, registered by
    the first statement run inside `atomic()`, reads the clock in the committing thread right after
    COMMIT returned. (The clock after the view returned would be later by however long the response
    takes to build in a busy process: tens of ms under load.) Without a transaction, the clock after
    the view."""

    def middleware(request: HttpRequest) -> HttpResponse:
        stamps: list[float] = []
        watching = [True]

        def watch(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
            # Not by the SQL's text: emit() writes the event inside a CTE, and statements change.
            if watching[0] and connection.in_atomic_block:
                watching[0] = False
                transaction.on_commit(lambda: stamps.append(time.time()))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(watch):
            response = get_response(request)
        response[COMMIT_STAMP_HEADER] = repr(stamps[0] if stamps else time.time())
        return response

    return middleware
