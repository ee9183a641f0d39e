"""Shared by the purchase commands: a domain error becomes one clear CommandError line (exit 1)."""

import contextlib
from collections.abc import Iterator

from django.core.management.base import CommandError

from purchases.errors import DomainError


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    try:
        yield
    except DomainError as exc:
        raise CommandError(f"{exc.code.replace('_', ' ')}: {exc.message}") from exc
