"""Training sessions in the admin: read-only (they change only through `sessions_app.services`)."""

from django.contrib import admin

from outbox.admin import ReadOnlyModelAdmin
from sessions_app.models import TrainingSession


@admin.register(TrainingSession)
class TrainingSessionAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "purchase", "number", "trainer", "starts_at", "duration_minutes", "status")
    list_select_related = ("purchase", "trainer")
    list_filter = ("status", "trainer")
    search_fields = ("=purchase__payment__provider_payment_id",)
    ordering = ("-starts_at",)
