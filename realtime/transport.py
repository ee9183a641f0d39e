"""uvicorn's WebSocket protocol, plus: a connection whose peer stopped reading is really closed.

uvicorn ends a connection with `transport.close()`, which in asyncio first waits for the write buffer
to drain. A client that stopped reading never drains it (its TCP window stays at zero; the kernel
probes it forever), so after the consumer had dropped such a client the connection, its buffers and
its file descriptor lived on for minutes or more. Here, once the application has finished (or the
protocol keepalive timed out), a connection still open `ABORT_GRACE` seconds later is aborted:
`SO_LINGER` 0, then `transport.abort()`, so the kernel discards the unsent bytes and sends a RST.
A connection that closes normally is gone long before the grace ends and is not affected.

Used by the `ws` process: `uvicorn ... --ws realtime.transport:WebSocketProtocol` (config/commands.py,
Procfile).
"""

import contextlib
import logging
import socket
import struct

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

logger = logging.getLogger(__name__)

# Long enough for a live peer to answer a close frame, short enough to stay well within the promise
# that a stalled client is disconnected within REALTIME_SEND_TIMEOUT_SECONDS + 5 s.
ABORT_GRACE = 2.0


class WebSocketProtocol(WebSocketsSansIOProtocol):
    async def run_asgi(self) -> None:
        try:
            await super().run_asgi()
        finally:
            self._abort_later()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._abort_later()

    def _abort_later(self) -> None:
        self.loop.call_later(ABORT_GRACE, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.disconnected or self.transport is None:
            return
        pending = self.transport.get_write_buffer_size()
        logger.warning(
            "%s: connection still open %.0fs after it ended (%d bytes unsent: the client stopped reading); aborting",
            f"{self.client[0]}:{self.client[1]}" if self.client else "client",
            ABORT_GRACE,
            pending,
        )
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # RST instead of a FIN queued behind the unsent bytes
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()
