"""Training sessions in the admin: read-only (they change only through `sessions_app.services`); the
"move to the next free slot" action calls `session_reschedule`."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from backoffice.admin.base import ReadOnlyModelAdmin
from kernel.errors import ApplicationError
from sessions_app.models import TrainingSession
from sessions_app.services import iso, session_reschedule


@admin.register(TrainingSession)
class TrainingSessionAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "purchase", "number", "trainer", "starts_at", "ends_at", "duration_minutes", "status")
    list_select_related = ("purchase", "trainer")
    list_filter = ("status", "trainer")
    search_fields = ("=purchase__payment__provider_payment_id",)
    ordering = ("-starts_at",)
    actions = ("reschedule",)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("purchases.change_purchase"))

    @admin.action(description="Move to the trainer's next free slot", permissions=["operate"])
    def reschedule(self, request: HttpRequest, queryset: QuerySet[TrainingSession]) -> None:
        actor = f"admin:{request.user.get_username()}"
        for session_id in queryset.values_list("id", flat=True):
            try:
                moved = session_reschedule(session_id=session_id, actor=actor)
            except ApplicationError as exc:
                messages.error(request, f"Session {session_id} not moved: {exc.message}")
                continue
            self.message_user(request, f"Session {session_id} moved to {iso(moved.starts_at)}.")
