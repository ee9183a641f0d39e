"""The Procfile's processes as argument lists, for what starts them locally: `dev.py run`
(config/stack.py), the process tests (tests/support/processes.py) and the benchmarks (benchmarks/harness.py).

Each caller appends its own options (ports, worker pool, log level). No Django here: the callers that
import this never set Django up.
"""

import sys

PY = sys.executable

# As in the Procfile: protocol pings drop dead peers; no client message is anywhere near 64 KiB.
WS_PROTOCOL = "realtime.transport:WebSocketProtocol"
WS_FLAGS = ["--ws-ping-interval", "20", "--ws-ping-timeout", "20", "--ws-max-size", "65536"]


def web(bind: str, *extra: str) -> list[str]:
    """`web`: gunicorn serving `config.wsgi` with `config/gunicorn.conf.py`, on `bind` (host:port)."""
    return [
        PY,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--config",
        "config/gunicorn.conf.py",
        "--bind",
        bind,
        *extra,
    ]


def ws(host: str, port: int | str, *extra: str) -> list[str]:
    """`ws`: uvicorn serving `config.asgi` (WebSockets, and HTTP too)."""
    args = [PY, "-m", "uvicorn", "config.asgi:application", "--host", host, "--port", str(port)]
    # uvicorn's protocol, plus: a client that stopped reading has its TCP connection really closed.
    return [*args, "--ws", WS_PROTOCOL, "--lifespan", "off", "--no-access-log", *extra]


def relay(*extra: str) -> list[str]:
    return [PY, "manage.py", "run_relay", *extra]


def worker(*extra: str) -> list[str]:
    """A Celery worker that starts quickly (no gossip or mingle with other workers)."""
    return [
        PY,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        *extra,
    ]
