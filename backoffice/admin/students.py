"""Students (Django users) in the admin: Django's user admin, plus what support needs for one student.

- The action "Revoke API token" rotates each selected student's token through
  `student_token_revoke`: the old token stops working and, through the relay, its open sockets close
  with 4401.
- Each student's page links to their trace (`<id>/trace/`): the same report as
  `manage.py trace --student <id>`, verdict first, with a button that requests a resync through
  `student_resync_request`.
"""

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from backoffice.admin.base import as_id
from backoffice.student_trace import clock, student_trace
from backoffice.student_trace_render import student_trace_text
from purchases import services
from purchases.errors import UnknownStudent

User = get_user_model()


def _actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


class StudentAdmin(UserAdmin):
    list_display = ("username", "email", "first_name", "last_name", "is_staff", "trace_link")
    actions = ("revoke_tokens",)
    change_form_template = "admin/purchases/student/change_form.html"

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """May rotate tokens and request resyncs (both go through services and emit events)."""
        return bool(request.user.has_perm(f"{User._meta.app_label}.change_{User._meta.model_name}"))

    @admin.display(description="trace")
    def trace_link(self, obj: Any) -> str:
        return format_html('<a href="{}">trace</a>', reverse("admin:student_trace", args=[obj.pk]))

    @admin.action(description="Revoke API token (rotate it; its open sockets close)", permissions=["operate"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for student_id in sorted(queryset.values_list("pk", flat=True)):
            try:
                rotation = services.student_token_revoke(student_id=student_id, actor=_actor(request))
            except UnknownStudent:  # deleted meanwhile
                continue
            self.message_user(
                request,
                f"Student {student_id}: token rotated; the new token is {rotation.token}. "
                f"The old one no longer works and its open sockets are being closed.",
                messages.SUCCESS,
            )

    def get_urls(self) -> list[URLPattern]:
        trace = path("<int:student_id>/trace/", self.admin_site.admin_view(self.trace_view), name="student_trace")
        return [trace, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = dict(extra_context or {})
        if (student_id := as_id(object_id)) is not None:  # else Django's "doesn't exist" redirect
            extra["trace_url"] = reverse("admin:student_trace", args=[student_id])
        return super().change_view(request, object_id, form_url, extra)

    def trace_view(self, request: HttpRequest, student_id: int) -> HttpResponse:
        """The student's trace; POST `resync` requests a resync first (then shows the trace again)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            if not self.has_operate_permission(request):
                raise PermissionDenied
            try:
                event = services.student_resync_request(student_id=student_id, actor=_actor(request))
            except UnknownStudent as exc:
                raise Http404(str(exc)) from exc
            self.message_user(
                request,
                f"Resync requested (#{event.seq} student.resync_requested): the relay invalidates the cache "
                "and tells the app to refetch.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(request.path)
        trace = student_trace(student_id=student_id)
        if trace is None:
            raise Http404(f"no student {student_id}")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Trace of student {student_id}",
            "opts": self.model._meta,
            "trace": trace,
            "text": student_trace_text(trace),
            "traced_at": clock(trace.at, trace.at),
            "can_operate": self.has_operate_permission(request),
        }
        return TemplateResponse(request, "admin/purchases/student/trace.html", context)


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, StudentAdmin)
