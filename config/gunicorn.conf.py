"""Gunicorn settings of the `web` process (Procfile): the HTTP API, the admin and the student page.

Threads rather than more processes: the views mostly wait on PostgreSQL. Each process holds at most
DB_POOL_MAX_SIZE connections, which is kept at least WEB_THREADS so that no request thread waits for one.
"""

from config.env import check, reader

env = reader()

# A container's port must be reachable from outside it; set HOST=127.0.0.1 to keep it local.
bind = f"{env.str('HOST', '0.0.0.0')}:{env.int('PORT', 8000)}"  # noqa: S104
workers = env.int("WEB_CONCURRENCY", 2)
worker_class = "gthread"
threads = env.int("WEB_THREADS", 8)
# A request stuck longer than this (a hung database) gets its worker restarted instead of holding it.
timeout = env.int("WEB_TIMEOUT_SECONDS", 30)
graceful_timeout = 20
# Keep idle connections longer than a load balancer in front does (60 s is common), or it may send a
# request on a connection gunicorn is closing and answer 502.
keepalive = env.int("WEB_KEEPALIVE_SECONDS", 75)
accesslog = "-" if env.bool("WEB_ACCESS_LOG", False) else None
# Redacts `?token=` values from the access and error logs.
logger_class = "config.gunicorn_logging.RedactingLogger"
check(env)
errorlog = "-"
# Gunicorn's control socket (a file under $HOME) is not used by anything here.
control_socket_disable = True


def on_starting(server: object) -> None:
    """Read the Django settings once in the master, before any worker: a bad or refused value (e.g.
    ALLOWED_HOSTS=* in production) then stops gunicorn with its one-line error. In a worker, the same exit
    would only make the master start another worker, forever."""
    import importlib
    import os

    importlib.import_module(os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings"))
