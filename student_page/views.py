"""The live student page at `/`: static HTML + a little JavaScript; all data comes from the public
API and the WebSocket with the student's token, exactly as the mobile app would use them."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def student_page(request: HttpRequest) -> HttpResponse:
    context = {
        "ws_url": settings.REALTIME_WS_URL,
        "ping_ms": int(settings.STUDENT_PAGE_PING_SECONDS * 1000),
        "pong_ms": int(settings.STUDENT_PAGE_PONG_TIMEOUT_SECONDS * 1000),
    }
    return render(request, "student_page/index.html", context)
