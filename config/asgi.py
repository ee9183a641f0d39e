"""ASGI entry point of the `ws` process: WebSocket (Channels), and HTTP too (Django), so that one
server can also serve everything (the tests do; in production the `web` process serves HTTP)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier  # noqa: E402
from django.urls import re_path  # noqa: E402

from realtime.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Static files (the admin's CSS/JS) are served by WhiteNoise's middleware (config/settings.py).
        "http": django_asgi_app,
        # A socket to any other path is refused at the handshake (403), not failed with a traceback.
        "websocket": AllowedHostsOriginValidator(
            URLRouter([*websocket_urlpatterns, re_path(r"", WebsocketDenier.as_asgi())])
        ),
    }
)
