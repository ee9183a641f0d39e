"""Refuse what no view can handle: a URL holding U+0000 (`%00`) is answered 400 in the error shape.

PostgreSQL text cannot hold U+0000, so such a path or query value reaching a query (an admin lookup,
a trace by payment id, a filter) raised a DataError and answered 500.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from api.errors import error_body

PROBES = {"/livez", "/readyz", "/healthz"}


def serve_probes(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Health probes answer before any Host check or HTTPS redirect: an orchestrator probes a pod by its
    address (Kubernetes' httpGet sends the pod IP as Host), which ALLOWED_HOSTS rightly does not list, and
    a 400 there would keep every pod unready. The probes read nothing from the request."""
    from outbox.health import healthz_view, livez_view, readyz_view

    views = {"/livez": livez_view, "/readyz": readyz_view, "/healthz": healthz_view}

    def middleware(request: HttpRequest) -> HttpResponse:
        view = views.get(request.path_info) if request.method in ("GET", "HEAD") else None
        return view(request) if view is not None else get_response(request)

    return middleware


def reject_nul_characters(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path or "\x00" in query or "%00" in query:
            return JsonResponse(error_body("invalid_request", "The URL must not contain U+0000 (%00)."), status=400)
        return get_response(request)

    return middleware
