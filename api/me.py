"""`/api/v1/me/dashboard` and `/api/v1/me/events`: the student's read API (it reads three apps' data
through the selectors and the outbox's event log). Thin: cursor validation only."""

import re

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api import docs
from api.errors import ApiError
from dashboard import selectors
from outbox.selectors import student_events_after, student_last_seq

# ASCII digits only: str.isdigit() also accepts "²" and "٣", which int() then rejects or misreads.
_DIGITS = re.compile(r"[0-9]{1,18}")
EVENTS_PAGE_LIMIT = 500


class NamedRefSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class CourseRefSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    title = serializers.CharField()


class SessionSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    starts_at = serializers.DateTimeField(help_text="UTC, ISO 8601 with its offset (+00:00).")
    ends_at = serializers.DateTimeField(help_text="UTC, ISO 8601 with its offset (+00:00).")
    status = serializers.CharField()


class DashboardPurchaseSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    status = serializers.CharField()
    course = CourseRefSerializer()
    trainer = NamedRefSerializer(allow_null=True)
    sessions = SessionSerializer(many=True)


class StudentSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField()
    timezone = serializers.CharField(
        allow_null=True, help_text="The student's IANA time zone (profile); null: show the device's zone."
    )


class EventSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.UUIDField()
    seq = serializers.IntegerField()
    type = serializers.CharField()
    occurred_at = serializers.DateTimeField()
    # Named `data` on the wire, like the WebSocket messages.
    data = serializers.DictField()  # type: ignore[assignment]


class DashboardApi(APIView):
    # Documents the body only: the selector builds (and caches) the JSON itself.
    class OutputSerializer(serializers.Serializer[dict[str, object]]):
        student = StudentSerializer()
        purchases = DashboardPurchaseSerializer(many=True)
        seq = serializers.IntegerField()

        class Meta:
            ref_name = "Dashboard"

    @extend_schema(**docs.dashboard(response=OutputSerializer))
    def get(self, request: Request) -> HttpResponse:
        body, from_cache = selectors.dashboard_json(student=request.user)
        response = HttpResponse(body, content_type="application/json")
        response["X-Cache"] = "hit" if from_cache else "miss"
        return response


class EventsApi(APIView):
    class OutputSerializer(serializers.Serializer[dict[str, object]]):
        events = EventSerializer(many=True)
        seq = serializers.IntegerField(help_text="Seq of the last event in this page (or `after` if none).")

        class Meta:
            ref_name = "EventsPage"

    @extend_schema(**docs.events(response=OutputSerializer))
    def get(self, request: Request) -> Response:
        raw_after = request.query_params.get("after", "0")
        if not _DIGITS.fullmatch(raw_after):
            raise ApiError(
                code="invalid_request", message="`after` must be a non-negative integer.", details={"after": raw_after}
            )
        after = int(raw_after)
        assert request.user is not None and request.user.pk is not None
        events = student_events_after(student_id=request.user.pk, after=after, limit=EVENTS_PAGE_LIMIT)
        if not events and after > (last := student_last_seq(student_id=request.user.pk)):
            # As the socket's 4400: a client following this cursor would skip the events up to it.
            raise ApiError(
                code="cursor_ahead",
                message="`after` is ahead of the stream; resume from `seq`.",
                details={"after": after, "seq": last},
            )
        return Response({"events": [e.as_message() for e in events], "seq": events[-1].seq if events else after})
