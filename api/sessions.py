"""`POST /api/v1/me/sessions/<id>/reschedule`: the student moves one of their sessions. Thin."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.docs import THROTTLED, UNAUTHENTICATED, error_example, error_responses
from sessions_app import services
from sessions_app.errors import SessionNotFound

_MAX_ID = 2**63 - 1


class SessionRescheduleApi(APIView):
    class OutputSerializer(serializers.Serializer[dict[str, object]]):
        id = serializers.IntegerField()
        purchase_id = serializers.IntegerField()
        number = serializers.IntegerField()
        starts_at = serializers.DateTimeField(help_text="The new start: UTC, ISO 8601 with its offset (+00:00).")
        ends_at = serializers.DateTimeField(help_text="UTC, ISO 8601 with its offset (+00:00).")
        status = serializers.CharField()

        class Meta:
            ref_name = "RescheduledSession"

    @extend_schema(
        operation_id="me_session_reschedule",
        summary="Move one of the student's sessions to the trainer's next free slot",
        description=(
            "The next slot after the session's current start that is inside the trainer's weekly "
            "availability (in the trainer's time zone), free, and at least the lead time from now. "
            "The change reaches the student's apps as `session.rescheduled`. No body."
        ),
        request=None,
        examples=[
            OpenApiExample(
                "moved",
                value={
                    "id": 41,
                    "purchase_id": 17,
                    "number": 2,
                    "starts_at": "2026-12-16T09:00:00+00:00",
                    "ends_at": "2026-12-16T10:00:00+00:00",
                    "status": "scheduled",
                },
                response_only=True,
                status_codes=["200"],
            ),
        ],
        responses={
            200: OutputSerializer,
            **error_responses(
                UNAUTHENTICATED,
                (
                    404,
                    "No such session of this student (`not_found`).",
                    [error_example(404, "not_found", "no session 41", {"session_id": 41})],
                ),
                (
                    409,
                    "`no_free_slot`, or `session_not_reschedulable` (cancelled, started, or purchase not active).",
                    [
                        error_example(
                            409,
                            "no_free_slot",
                            "the trainer has no free slot after 2026-12-16T09:00:00+00:00 within the scheduling "
                            "horizon",
                            {"session_id": 41, "after": "2026-12-16T09:00:00+00:00"},
                        )
                    ],
                ),
                THROTTLED,
            ),
        },
    )
    def post(self, request: Request, session_id: int) -> Response:
        assert request.user is not None and request.user.pk is not None
        # Refusals (SessionNotFound 404, NoFreeSlot / SessionNotReschedulable 409) are ApplicationErrors:
        # api/errors.py maps them.
        if session_id > _MAX_ID:
            raise SessionNotFound(f"no session {session_id}", session_id=session_id)
        session = services.session_reschedule(
            session_id=session_id, student_id=request.user.pk, actor=f"student:{request.user.pk}"
        )
        return Response(
            {
                "id": session.pk,
                "purchase_id": session.purchase_id,
                "number": session.number,
                "starts_at": services.iso(session.starts_at),
                "ends_at": services.iso(session.ends_at),
                "status": session.status,
            }
        )
