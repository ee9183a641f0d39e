"""`GET /api/v1/courses`: the course catalogue."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api import docs
from purchases.models import Course


class CoursesApi(APIView):
    class OutputSerializer(serializers.ModelSerializer[Course]):
        class Meta:
            model = Course
            fields = ["id", "title", "sessions_count", "session_minutes", "price", "currency"]
            ref_name = "Course"

    @extend_schema(**docs.courses(response=OutputSerializer))
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(Course.objects.order_by("id"), many=True).data)
