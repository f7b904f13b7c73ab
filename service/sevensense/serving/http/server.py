"""The HTTP server's own guard: a connection must finish its request headers in time.

An ASGI app is called only once a request's headers are complete, so a client that trickles
its headers (slowloris) never reaches the front door, and uvicorn's h11 protocol, as BentoML
runs it, has no header timeout: such a connection stays open for ever. This protocol adds
one. It is the h11 protocol (the one uvicorn picks here, httptools not being installed)
with a timer armed when a connection opens and after each response, and disarmed when a
request's headers are complete; when it fires, the server answers a JSON 408 and closes.
Header size is already bounded by h11 (16 KiB, a plain 400 from uvicorn).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import ClassVar

import h11
import uvicorn.config
from uvicorn.protocols.http.h11_impl import H11Protocol

PROTOCOL = f"{__name__}:HeaderTimeoutProtocol"


class HeaderTimeoutProtocol(H11Protocol):
    header_timeout_s: ClassVar[float] = 10.0
    ws_send_buffer: ClassVar[int] = 0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request's headers are complete
            self._disarm()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The connection now belongs to the WebSocket protocol (WS /stream, which has its
        # own opening-message timeout): a 408 written into it later would corrupt its frames.
        self._disarm()
        if self.ws_send_buffer:
            # The kernel's own send buffer (megabytes on loopback, autotuned) would hide a
            # client that stopped reading its results: bound it, so that the stream's
            # slow-reader limit sees the stall (serving.stream.send_buffer_bytes).
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.ws_send_buffer)
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets the same bound

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served; its body has the front door's own limits
        body = json.dumps(
            {
                "error": {
                    "code": "header_timeout",
                    "message": f"request headers not complete within {self.header_timeout_s:g} s",
                    "request_id": "-",
                }
            }
        ).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()


def install(header_timeout_s: float, ws_send_buffer: int = 0) -> None:
    """Make uvicorn (as BentoML starts it, with ``http="auto"``) use this protocol; call it
    before the server starts, i.e. when the service module is imported."""
    HeaderTimeoutProtocol.header_timeout_s = header_timeout_s
    HeaderTimeoutProtocol.ws_send_buffer = ws_send_buffer
    uvicorn.config.HTTP_PROTOCOLS["auto"] = PROTOCOL
    uvicorn.config.HTTP_PROTOCOLS["h11"] = PROTOCOL
