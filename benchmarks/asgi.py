"""ASGI entry point of the naive chain's `ws` process (benchmark processes only): the product's routes
(as `config.asgi` serves them) plus the naive chain's socket at `NAIVE_WS_PATH` (`benchmarks.naive_ws`)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from benchmarks.harness import NAIVE_WS_PATH  # noqa: E402
from benchmarks.naive_ws import NaiveEventsConsumer  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            URLRouter([*websocket_urlpatterns, path(NAIVE_WS_PATH, NaiveEventsConsumer.as_asgi())])
        ),
    }
)
