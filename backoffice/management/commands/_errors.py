"""Shared by the operator commands: a refused request becomes one clear CommandError line (exit 1)."""

import contextlib
from collections.abc import Iterator

from django.core.management.base import CommandError

from kernel.errors import ApplicationError


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """`<code in words>: <message>` for any ApplicationError (kernel/errors.py)."""
    try:
        yield
    except ApplicationError as exc:
        raise CommandError(f"{exc.code.replace('_', ' ')}: {exc.message}") from exc
