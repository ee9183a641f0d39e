"""What every model admin of the back office shares: read-only by default, and links to the trace page."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse


def trace_url(payment_id: str) -> str:
    """The admin timeline page of a payment's chain."""
    return reverse("admin:outbox_outboxevent_trace", args=[payment_id])


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """Viewable, never added, changed or deleted here: these rows change only through services."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
