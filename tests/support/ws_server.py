"""Runs the project's ASGI app under uvicorn on a listening socket the tests can tune.

`python -m tests.support.ws_server --port P [--sndbuf BYTES] [--ws-ping-interval S] [--ws-ping-timeout S]`

Same server as `Processes.server()` (uvicorn, config.asgi, lifespan off), plus two knobs:

- `--sndbuf` fixes the kernel send buffer of every accepted connection (Linux copies it from the
  listening socket). By default the kernel grows it to megabytes, so a client that stops reading
  would need tens of thousands of events before the server feels any backpressure; with a small
  buffer a few hundred suffice, which keeps the slow-client tests fast. It changes how soon a stall
  happens, not what happens then.
- uvicorn's protocol-level keepalive, to test that dead peers are dropped in a second, not a minute.
"""

import argparse
import socket

import uvicorn

from config import commands


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sndbuf", type=int, default=None)
    parser.add_argument("--ws-ping-interval", type=float, default=20.0)
    parser.add_argument("--ws-ping-timeout", type=float, default=20.0)
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.sndbuf)
    sock.bind(("127.0.0.1", args.port))
    config = uvicorn.Config(
        "config.asgi:application",
        ws=commands.WS_PROTOCOL,
        lifespan="off",
        access_log=False,
        ws_ping_interval=args.ws_ping_interval,
        ws_ping_timeout=args.ws_ping_timeout,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
