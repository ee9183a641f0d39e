"""The live student page at `/`: static HTML + a little JavaScript; all data comes from the public
API and the WebSocket with the student's token, exactly as the mobile app would use them."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def student_page(request: HttpRequest) -> HttpResponse:
    return render(request, "student_page/index.html", {"ws_url": settings.REALTIME_WS_URL})
