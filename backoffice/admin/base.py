"""What every model admin of the back office shares: read-only by default, and links to the trace page."""

import re
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import register_converter, reverse
from django.urls.converters import PathConverter


class AnyText(PathConverter):
    """Any non-empty text, line breaks included. A provider's payment id is whatever it sent (only NUL
    and lone surrogates are refused): Django's `path` (`.+`) stops at a line break, so one id with a
    newline could not be linked and every list showing it answered 500."""

    regex = "(?s:.+)"


register_converter(AnyText, "anytext")


_ID = re.compile(r"[0-9]{1,18}")


def as_id(text: str) -> int | None:
    """`text` as a row id if it is one: ASCII digits that fit a bigint (str.isdigit() also accepts "²",
    which int() refuses, and a 40-digit number reaches PostgreSQL as a numeric); else None."""
    return int(text) if _ID.fullmatch(text) else None


def trace_url(payment_id: str) -> str:
    """The admin timeline page of a payment's chain (`trace/<anytext:payment_id>/`)."""
    return reverse("admin:outbox_outboxevent_trace", args=[payment_id])


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """Viewable, never added, changed or deleted here: these rows change only through services."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
