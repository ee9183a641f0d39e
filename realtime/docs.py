"""`/api/docs/websocket/`: the WebSocket contract, beside the OpenAPI docs (linked from them), offline.

The same contract as `realtime/README.md` and the consumer's docstring, for client developers.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from realtime.consumers import BAD_REQUEST, GONE, UNAUTHORIZED

TOO_MANY_SOCKETS = 4429  # beyond REALTIME_MAX_SOCKETS_PER_STUDENT open sockets (a close code of the public contract)


@require_GET
def websocket_docs(request: HttpRequest) -> HttpResponse:
    context = {
        "codes": {"unauthorized": UNAUTHORIZED, "bad_request": BAD_REQUEST, "gone": GONE, "too_many": TOO_MANY_SOCKETS},
        "host": request.get_host(),
    }
    return render(request, "realtime/websocket.html", context)
