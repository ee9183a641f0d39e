"""WSGI entry point of the `web` process: the HTTP API, the admin and the student page.

WebSockets are served by `config.asgi` in the `ws` process. Django's sync views run best under a WSGI
server: under ASGI every request hops between the event loop and threads several times (once per
middleware), and in a process that also serves sockets those views starve the socket event loop.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("COURSECHAIN_PROCESS", "web")  # what /readyz checks (outbox/health.py)
# Static files (the admin's CSS/JS) are served by WhiteNoise's middleware (config/settings.py).
application = get_wsgi_application()
