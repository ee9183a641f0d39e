"""`/api/v1/me/profile`: the student's preferences (their time zone). Thin: the service validates."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApiError
from purchases import services
from purchases.api_docs import PROFILE_GET, PROFILE_UPDATE
from purchases.errors import InvalidTimezone
from purchases.models import StudentProfile
from purchases.serializers import ProfileSerializer


def _profile(student_id: int) -> dict[str, Any]:
    zone = StudentProfile.objects.filter(student_id=student_id).values_list("timezone", flat=True).first()
    return {"timezone": zone or None}


class ProfileApi(APIView):
    @extend_schema(**PROFILE_GET)
    def get(self, request: Request) -> Response:
        assert request.user is not None and request.user.pk is not None
        return Response(_profile(request.user.pk))

    @extend_schema(**PROFILE_UPDATE)
    def patch(self, request: Request) -> Response:
        assert request.user is not None and request.user.pk is not None
        serializer = ProfileSerializer(data=request.data, partial=True)
        if not serializer.is_valid():
            raise ApiError(code="invalid_request", message="The request is not valid.", details=serializer.errors)
        if "timezone" in serializer.validated_data:
            try:
                services.student_profile_update(
                    student_id=request.user.pk,
                    timezone_name=serializer.validated_data["timezone"],
                    actor=f"student:{request.user.pk}",
                )
            except InvalidTimezone as exc:
                raise ApiError(
                    code="invalid_timezone", message=str(exc), details={"timezone": request.data.get("timezone")}
                ) from exc
        return Response(_profile(request.user.pk))
