"""The outbox in the admin: events, deliveries (dead letters with their errors), the inbox, a retry
action and the per-payment timeline (`backoffice.trace`). Everything here is read-only except the retry
action, which calls `outbox.operations.deliveries_retry` like `manage.py outbox retry`.
"""

from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from backoffice.admin.base import ReadOnlyModelAdmin, trace_url
from backoffice.admin.outbox_filters import (
    AgeFilter,
    DeliveryEventTypeFilter,
    EventProblemFilter,
    EventTypeFilter,
    ProblemFilter,
    SinkFilter,
    StudentFilter,
)
from backoffice.trace import payment_trace
from outbox import operations
from outbox.models import Delivery, InboxEntry, OutboxEvent

ESTIMATE_ABOVE = 10_000


class EstimatedCountPaginator(Paginator):
    """An unfiltered list of a big outbox table counts by the planner's estimate, not COUNT(*) over
    the whole history; filtered lists (and small tables) count exactly."""

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is not None and not query.where:
            estimate = operations.estimated_rows(query.model._meta.db_table)
            if estimate is not None and estimate > ESTIMATE_ABOVE:
                return estimate
        return int(super().count)


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = ("id", "sink", "status", "attempts", "available_at", "claimed_by", "claimed_at", "done_at", "last_error")
    readonly_fields = fields
    ordering = ("id",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OperableAdmin(ReadOnlyModelAdmin):
    """Read-only, plus a retry action for users who may operate the outbox."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("outbox.change_delivery"))

    def _retry(self, request: HttpRequest, delivery_ids: Iterable[int]) -> HttpResponse | None:
        try:
            result = operations.deliveries_retry(ids=list(delivery_ids), include_failing=True)
        except operations.UnknownDeliveries as exc:  # purged meanwhile
            self.message_user(request, f"Nothing requeued: {exc}.", messages.ERROR)
            return None
        skipped = f"; {len(result.skipped_ids)} done or in flight, left alone" if result.skipped_ids else ""
        self.message_user(
            request,
            f"Requeued {result.requeued} deliveries (due now, attempts reset){skipped}.",
            messages.SUCCESS if result.requeued else messages.WARNING,
        )
        # The timeline page posts here with `next` to come back to itself.
        next_url = request.POST.get("next", "")
        if next_url and url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
            return HttpResponseRedirect(next_url)
        return None


@admin.register(OutboxEvent)
class OutboxEventAdmin(OperableAdmin):
    list_display = ("seq", "type", "student_id", "actor", "chain", "created_at", "delivery_states")
    list_filter = (EventTypeFilter, EventProblemFilter, AgeFilter, StudentFilter)
    search_fields = ("=correlation_id", "=actor")
    search_help_text = "Exact payment (correlation) id or actor, e.g. admin:alice"
    ordering = ("-created_at",)
    inlines = (DeliveryInline,)
    actions = ("retry_event_deliveries",)
    fields = ("id", "type", "seq", "student", "actor", "chain", "causation_id", "aggregate", "created_at", "payload")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[OutboxEvent]:
        return super().get_queryset(request).prefetch_related("deliveries")

    @admin.display(description="chain (payment)")
    def chain(self, obj: OutboxEvent) -> str:
        return format_html('<a href="{}">{}</a>', trace_url(obj.correlation_id), obj.correlation_id)

    @admin.display(description="aggregate")
    def aggregate(self, obj: OutboxEvent) -> str:
        return f"{obj.aggregate_type} {obj.aggregate_id}"

    @admin.display(description="deliveries")
    def delivery_states(self, obj: OutboxEvent) -> str:
        return ", ".join(f"{d.sink}: {d.status}" for d in sorted(obj.deliveries.all(), key=lambda d: d.pk))

    @admin.action(description="Retry the dead or failing deliveries of the selected events", permissions=["operate"])
    def retry_event_deliveries(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> HttpResponse | None:
        ids = (
            Delivery.objects.filter(event__in=queryset)
            .exclude(status=Delivery.Status.DONE)
            .values_list("id", flat=True)
        )
        return self._retry(request, ids)

    def get_urls(self) -> list[URLPattern]:
        trace = path(
            "trace/<anytext:payment_id>/", self.admin_site.admin_view(self.trace_view), name="outbox_outboxevent_trace"
        )
        return [trace, *super().get_urls()]

    def trace_view(self, request: HttpRequest, payment_id: str) -> TemplateResponse:
        """The payment's timeline: every event of its chain, each delivery, and the verdict."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        trace = payment_trace(payment_id=payment_id)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Timeline of payment {payment_id}",
            "opts": self.model._meta,
            "payment_id": payment_id,
            "trace": trace,
            "can_retry": self.has_operate_permission(request),
            "retry_url": reverse("admin:outbox_delivery_changelist"),
        }
        return TemplateResponse(request, "admin/outbox/trace.html", context, status=200 if trace else 404)


@admin.register(Delivery)
class DeliveryAdmin(OperableAdmin):
    list_display = ("id", "sink", "status", "attempts", "event_link", "student_id", "available_at", "error")
    list_filter = (ProblemFilter, "status", SinkFilter, DeliveryEventTypeFilter, AgeFilter, StudentFilter)
    list_select_related = ("event",)
    search_fields = ("=event__correlation_id", "=claimed_by")
    search_help_text = "Exact payment (correlation) id or relay id"
    ordering = ("-id",)
    actions = ("retry_deliveries",)
    readonly_fields = (
        "id", "event_link", "sink", "status", "attempts", "student_id", "seq", "available_at",
        "claimed_by", "claimed_at", "created_at", "done_at", "last_error",
    )  # fmt: skip
    fields = readonly_fields

    @admin.display(description="event")
    def event_link(self, obj: Delivery) -> str:
        event = obj.event
        return format_html(
            '<a href="{}">#{} {}</a> (<a href="{}">timeline</a>)',
            reverse("admin:outbox_outboxevent_change", args=[event.pk]),
            event.seq,
            event.type,
            trace_url(event.correlation_id),
        )

    @admin.display(description="last error")
    def error(self, obj: Delivery) -> str:
        lines = obj.last_error.strip().splitlines()
        return (lines[-1][:160] if lines else "") or "-"

    @admin.action(description="Retry: requeue the selected dead or failing deliveries now", permissions=["operate"])
    def retry_deliveries(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> HttpResponse | None:
        return self._retry(request, queryset.values_list("id", flat=True))


@admin.register(InboxEntry)
class InboxEntryAdmin(ReadOnlyModelAdmin):
    list_display = ("handler", "event_id", "processed_at")
    search_fields = ("=event_id",)
    ordering = ("-id",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
