"""The outbox admin's list filters: by student, age, event type, sink and delivery problem. Each filters
with an indexed condition; none lists the distinct values of the history."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from backoffice.admin.base import as_id
from outbox import operations, registry
from outbox.models import Delivery


class StudentFilter(admin.SimpleListFilter):
    """A student id typed into a box (listing every student as a link would not scale)."""

    title = "student id"
    parameter_name = "student"
    template = "admin/outbox/input_filter.html"
    field = "student_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("", "")]  # the box replaces the links; one lookup keeps the filter shown

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        student_id = as_id((self.value() or "").strip())
        return queryset if student_id is None else queryset.filter(**{self.field: student_id})

    def choices(self, changelist: Any) -> Iterator[Any]:
        others = [
            (key, value)
            for key, values in changelist.params.items()
            if key not in (self.parameter_name, "p")
            for value in (values if isinstance(values, list) else [values])
        ]
        yield {"value": self.value() or "", "others": others, "parameter_name": self.parameter_name}


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"
    _spans = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "1d": timedelta(days=1)}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("5m", "last 5 minutes"), ("1h", "last hour"), ("1d", "last day"), ("old", "older than 7 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now, value = timezone.now(), self.value()
        if value in self._spans:
            return queryset.filter(created_at__gte=now - self._spans[value])
        if value == "old":
            return queryset.filter(created_at__lt=now - timedelta(days=7))
        return queryset


class FixedChoicesFilter(admin.SimpleListFilter):
    """Equality on `field` with choices known up front (no DISTINCT scan of the history)."""

    field = ""

    def options(self) -> list[str]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(option, option) for option in self.options()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class EventTypeFilter(FixedChoicesFilter):
    title, parameter_name, field = "event type", "type", "type"

    def options(self) -> list[str]:
        # The types the apps declare (outbox.registry): listing the distinct types of the table would
        # scan the whole history on every page view.
        return sorted(t.name for t in registry.event_types())


class DeliveryEventTypeFilter(EventTypeFilter):
    parameter_name, field = "event_type", "event__type"


class SinkFilter(FixedChoicesFilter):
    title, parameter_name, field = "sink", "sink", "sink"

    def options(self) -> list[str]:
        return sorted(operations.known_sinks())


_PROBLEMS = {
    "open": ~Q(status=Delivery.Status.DONE),
    "dead": Q(status=Delivery.Status.DEAD),
    "failing": Q(status=Delivery.Status.PENDING, attempts__gt=0) & ~Q(last_error=""),
    "expired": Q(status=Delivery.Status.IN_FLIGHT),  # narrowed by time in queryset()
}


class ProblemFilter(admin.SimpleListFilter):
    """What an operator looks for: open, dead-lettered, failing (backing off), expired leases."""

    title = "problem"
    parameter_name = "problem"
    on_events = False  # filter events by their deliveries' state

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("open", "not delivered yet"),
            ("dead", "dead-lettered"),
            ("failing", "failing"),
            ("expired", "lease expired"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value not in _PROBLEMS:
            return queryset
        condition = _PROBLEMS[value]
        if value == "expired":
            condition &= Q(available_at__lt=timezone.now())
        if self.on_events:
            return queryset.filter(id__in=Delivery.objects.filter(condition).values("event_id"))
        return queryset.filter(condition)


class EventProblemFilter(ProblemFilter):
    title = "delivery problem"
    on_events = True
