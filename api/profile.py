"""`/api/v1/me/profile`: the student's preferences (their time zone). Thin: the service validates."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api import docs
from api.errors import ApiError
from purchases import services
from purchases.errors import InvalidTimezone
from purchases.models import StudentProfile


def _profile(student_id: int) -> dict[str, Any]:
    zone = StudentProfile.objects.filter(student_id=student_id).values_list("timezone", flat=True).first()
    return {"timezone": zone or None}


class ProfileApi(APIView):
    class InputSerializer(serializers.Serializer[dict[str, object]]):
        timezone = serializers.CharField(
            max_length=64,
            allow_null=True,
            allow_blank=True,
            help_text='IANA time zone name, e.g. "Europe/Berlin"; null or "" clears it (the app uses the device\'s).',
        )

        class Meta:
            ref_name = "Profile"

    # The same one field: what a PATCH sets is what a GET (and the PATCH) answers.
    class OutputSerializer(InputSerializer):
        pass

    @extend_schema(**docs.profile_get(response=OutputSerializer))
    def get(self, request: Request) -> Response:
        assert request.user is not None and request.user.pk is not None
        return Response(_profile(request.user.pk))

    @extend_schema(**docs.profile_update(request=InputSerializer, response=OutputSerializer))
    def patch(self, request: Request) -> Response:
        assert request.user is not None and request.user.pk is not None
        serializer = self.InputSerializer(data=request.data, partial=True)
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
