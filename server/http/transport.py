"""uvicorn's HTTP protocol with our changes: what a connection writes during one pass of the event loop
reaches the socket as one write; requests and connections are held to the limits of limits.py
(connection_limits.py); and what the protocol refuses itself, a request that does not parse as HTTP
included, is answered in the API's JSON error shape (refusals.py; uvicorn's is text/plain).

uvicorn writes each ASGI message as soon as it is sent: a streamed response's head, then its first event,
then at the end its last event and the chunked-encoding terminator, each a separate `send` on the socket.
On loopback each write also runs the receiver's TCP input and wakes it: 155 us per write here (the
gateway under cProfile, at concurrency 1); worse, the client woken by the head alone takes the CPU and
the first event waits behind it. Holding a connection's writes until the end of the current loop pass
sends head and first event in one segment, and the last event with the terminator, at the cost of at most
one loop pass of delay. A response's end is written as soon as it is sent, since nothing can join it.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

from server.http.connection_limits import H11Heads, HttptoolsHeads, LimitedConnection
from server.http.limits import HttpLimits


class CoalescingTransport:
    """Wraps a transport so that its writes during one loop pass go out together; everything else is the
    wrapped transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def http_protocol(limits: HttpLimits | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol class (httptools when installed, as uvicorn's "auto" picks), with our
    changes and `limits` (default: HttpLimits()). Pass it to uvicorn as `http=`."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # httptools is not installed: uvicorn's pure-Python parser
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    return protocol_over(base, limits)


def protocol_over(base: type[asyncio.Protocol], limits: HttpLimits | None = None) -> type[asyncio.Protocol]:
    """`base` (uvicorn's httptools or h11 protocol class) writing through a `CoalescingTransport`, holding
    requests and connections to `limits` (connection_limits.py), and answering what it refuses, requests
    that do not parse included, in JSON (refusals.py)."""
    heads = H11Heads if issubclass(base, H11Protocol) else HttptoolsHeads
    chosen_limits = limits or HttpLimits()

    class TurnoutHttpProtocol(LimitedConnection, heads, base):
        limits = chosen_limits

        def connection_made(self, transport) -> None:
            super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))

        def on_response_complete(self) -> None:
            # The response's last bytes go now: what the app does after its last send (closing streams,
            # metrics, the access log) must not hold them until the end of the loop pass. At c1 through the
            # openai backend that was ~0.2 ms of end-to-end latency.
            self.transport.flush()
            super().on_response_complete()

    return TurnoutHttpProtocol
