"""Helpers for the socket-lifetime tests: raw never-reading peers and the kernel's view of a connection."""

import socket
import subprocess
from pathlib import Path

import redis
from django.conf import settings

from config import commands
from config.processes import ROOT
from tests.support.processes import process_env

SMALL_BUFFER = 4096


def never_reading_peer(host: str, key: str, *, rcvbuf: int = SMALL_BUFFER) -> socket.socket:
    """A WebSocket peer that completes the opening handshake and then never reads another byte. Its
    receive buffer is small (set before connect, so its TCP window stays small)."""
    address, port = host.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((address, int(port)))
    sock.sendall(
        (
            f"GET /ws/events/?token={key}&after=0 HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)  # byte by byte: read nothing past the handshake
        assert chunk, "server closed during the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


# A masked client text frame {"type":"ping"} (mask 0x00000000 keeps it readable; any mask is valid).
PING_FRAME = b"\x81\x90\x00\x00\x00\x00" + b'{"type": "ping"}'


def server_side_state(server_port: int, client: socket.socket) -> str | None:
    """The kernel's TCP state of the server's end of `client`'s connection ("01" established, "04"
    FIN-WAIT-1 with unsent data...), or None once the kernel has dropped it (after a RST)."""
    client_port = client.getsockname()[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                return state
    return None


def registry_entries(student_id: int) -> list[dict[str, str]]:
    """The student's live socket-registry entries (as the trace reads them)."""
    from realtime import registry

    return [vars(e) for e in registry.student_sockets(student_id=student_id)]


def registry_size(student_id: int) -> int:
    prefix = settings.REALTIME_REGISTRY_PREFIX
    return int(redis.Redis.from_url(settings.REDIS_URL).zcard(f"{prefix}:student:{student_id}"))


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A real `manage.py` command against the test database."""
    return subprocess.run(
        [commands.PY, "manage.py", *args], cwd=ROOT, env=process_env(**env), capture_output=True, text=True, timeout=60
    )
