"""One error shape for every API error: {"error": {"code", "message", "details"}}.

Every refused request is an `ApplicationError` (kernel/errors.py), whatever layer raised it; the
exception handler maps it once, generically, to its code, status, message and details.
"""

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler

from kernel.errors import ApplicationError


class ApiError(ApplicationError):
    """A refusal only the HTTP layer knows (a body too large, a bad cursor...), with a stable snake_case
    code; 400 unless `status_code` says otherwise."""

    def __init__(self, *, code: str, message: str, status_code: int = 400, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.details = details or {}
        self.code = code
        self.status = status_code


class ErrorDetailSerializer(serializers.Serializer[dict[str, object]]):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


# `error_body` as the docs (api/docs.py) show it for every error status. (A docstring here would become
# the schema's description.)
class ErrorSerializer(serializers.Serializer[dict[str, object]]):
    error = ErrorDetailSerializer()


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error of an API view in the one shape, as JSON, whatever renderer `?format=` or Accept
    asked for (a failed negotiation is itself such an error)."""
    request = context.get("request")
    if request is not None:
        request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, ApplicationError):
        # A refused request, in its own code and status (docs/architecture.md, Errors).
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid_request", "The request is not valid.", {"fields": exc.detail})
    elif isinstance(exc, exceptions.Throttled):
        response.data = error_body(
            "throttled", "Too many requests; retry later.", {"retry_after_seconds": getattr(exc, "wait", None)}
        )
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        response.data = error_body(str(code), str(exc.detail))
    return response


def json_404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("not_found", "No such resource."), status=status.HTTP_404_NOT_FOUND)


def json_500(request: HttpRequest) -> JsonResponse:
    return JsonResponse(error_body("server_error", "Internal error."), status=status.HTTP_500_INTERNAL_SERVER_ERROR)
