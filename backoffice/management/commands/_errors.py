"""Shared by the operator commands: a refused request becomes one clear CommandError line (exit 1)."""

import contextlib
from collections.abc import Iterator

from django.core.management.base import CommandError

from kernel.errors import ApplicationError
from purchases.errors import DomainError


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """`<code in words>: <message>` for any ApplicationError (kernel/errors.py); DomainError is named too
    for as long as it is a base of its own."""
    try:
        yield
    except (ApplicationError, DomainError) as exc:
        raise CommandError(f"{exc.code.replace('_', ' ')}: {exc.message}") from exc
