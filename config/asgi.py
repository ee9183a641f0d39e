"""ASGI entry point of the `ws` process: WebSocket (Channels), and HTTP too (Django), so that one
server can also serve everything (the tests do; in production the `web` process serves HTTP)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("COURSECHAIN_PROCESS", "ws")  # what /readyz checks (outbox/health.py)
django_asgi_app = get_asgi_application()

from typing import Any  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from realtime.routing import websocket_urlpatterns  # noqa: E402


async def refuse_websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Close a WebSocket handshake before accepting it, which the server answers with HTTP 403, and
    be done. (channels' WebsocketDenier left a task waiting for every refused handshake, for as long
    as the process lived, and held up the server's shutdown.)"""
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 1008})


class BrowserOriginValidator(OriginValidator):
    """channels' Origin check against ALLOWED_HOSTS, for browsers (which always send Origin: a page
    from another site gets 403). A client that sends no Origin is an app, not a browser: it goes on
    to the token check, as before ALLOWED_HOSTS had to be explicit (a token, not a cookie,
    authenticates a socket, so another site's page has nothing to ride on). Refusals end at once."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            origins = [
                urlparse(value.decode("latin1")) for name, value in scope.get("headers", []) if name == b"origin"
            ]
            allowed = not origins or self.validate_origin(origins[-1])
        except ValueError:  # e.g. `http://[::1`: not an origin any browser sends
            allowed = False
        if allowed:
            return await self.application(scope, receive, send)
        return await refuse_websocket(scope, receive, send)


application = ProtocolTypeRouter(
    {
        # Static files (the admin's CSS/JS) are served by WhiteNoise's middleware (config/settings.py).
        "http": django_asgi_app,
        # A socket to any other path is refused at the handshake (403), not failed with a traceback.
        "websocket": BrowserOriginValidator(
            URLRouter([*websocket_urlpatterns, re_path(r"", refuse_websocket)]),  # type: ignore[arg-type]
            settings.ALLOWED_HOSTS,
        ),
    }
)
