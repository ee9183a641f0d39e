"""The real relay, Celery worker and servers as subprocesses of a test, against the test database,
supervised by `config.processes` (the supervisor `dev.py run` and the benchmarks use too)."""

import os
import subprocess
from pathlib import Path
from urllib.parse import quote

from django.db import connection

from config import commands
from config.processes import Child, Supervisor, free_port, port_open
from tests.support.waiting import wait_until


def subprocess_database_url() -> str:
    """DATABASE_URL of the database the tests run in (pytest-django's test database)."""
    s = connection.settings_dict
    host = quote(s["HOST"] or "", safe="")
    auth = s["USER"] + (f":{quote(s['PASSWORD'], safe='')}" if s["PASSWORD"] else "")
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{s['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=subprocess_database_url(),
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONUNBUFFERED="1",
        OUTBOX_POLL_SECONDS="0.2",
        OUTBOX_BACKOFF_BASE_SECONDS="0.2",
        OUTBOX_BACKOFF_MAX_SECONDS="2",
        DB_APPLICATION_NAME="coursechain-test-subprocess",
    )
    env.update(extra)
    return env


class Processes:
    """Starts real processes, each logging to `<tmp_path>/<name>.log`, and always stops them (SIGTERM,
    then SIGKILL of the process and what it started)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.supervisor = Supervisor(log_dir=tmp_path)
        self.children: dict[str, Child] = {}

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        return {name: child.popen for name, child in self.children.items()}

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        child = self.supervisor.start(name, args, process_env(**env))
        self.children[name] = child
        return child.popen

    def relay(self, name: str = "relay", **env: str) -> subprocess.Popen[bytes]:
        return self.start(name, commands.relay(), **env)

    def worker(self, name: str = "worker", **env: str) -> subprocess.Popen[bytes]:
        args = commands.worker("--pool", "solo", "--without-heartbeat", "-n", f"{name}@%h")
        return self.start(name, args, **env)

    def web(self, name: str = "web", port: int | None = None, /, **env: str) -> str:
        """The Procfile's `web` process: gunicorn serving `config.wsgi` (HTTP only)."""
        port = port or free_port()
        self.start(name, commands.web(f"127.0.0.1:{port}", "--workers", "1"), **env)
        wait_until(lambda: port_open(port), timeout=30, what=f"{name} to listen on {port}")
        return f"127.0.0.1:{port}"

    def server(self, name: str = "web", port: int | None = None, /, **env: str) -> str:
        """The Procfile's `ws` process: uvicorn serving `config.asgi` (WebSockets, and HTTP too)."""
        port = port or free_port()
        self.start(name, commands.ws("127.0.0.1", port), **env)
        wait_until(lambda: port_open(port), timeout=30, what=f"{name} to listen on {port}")
        return f"127.0.0.1:{port}"

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        self.supervisor.stop_all()


def end_subprocess_sessions() -> None:
    """End the database sessions the subprocesses left (a process killed with -9 leaves its session
    behind for a moment), so the test database can be flushed and dropped. Only theirs: this
    process's own pooled connections must live on."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name <> %s",
            [connection.settings_dict["OPTIONS"].get("application_name", "")],
        )
