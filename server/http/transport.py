"""uvicorn's HTTP protocol with two changes: what a connection writes during one pass of the event loop
reaches the socket as one write, and a request that does not parse as HTTP is answered in the API's JSON
error shape (uvicorn's is text/plain).

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
import json

from server.errors import error_body


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

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol class (httptools when installed, as uvicorn's "auto" picks), with our
    changes. Pass it to uvicorn as `http=`."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # httptools is not installed: uvicorn's pure-Python parser
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    return protocol_over(base)


def bad_request_response(message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole 400 response, in OpenAI's error shape, for a connection about to close."""
    body = json.dumps(error_body(message, "invalid_request_error")).encode()
    head = [b"HTTP/1.1 400 Bad Request\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]  # server, date
    head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
             b"connection: close\r\n\r\n"]
    return b"".join(head) + body


def protocol_over(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """`base` (uvicorn's httptools or h11 protocol class) writing through a `CoalescingTransport` and
    answering unparseable requests with `bad_request_response`."""

    class CoalescingHttpProtocol(base):
        def connection_made(self, transport) -> None:
            super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))

        def on_response_complete(self) -> None:
            # The response's last bytes go now: what the app does after its last send (closing streams,
            # metrics, the access log) must not hold them until the end of the loop pass. At c1 through the
            # openai backend that was ~0.2 ms of end-to-end latency.
            self.transport.flush()
            super().on_response_complete()

        def send_400_response(self, msg: str) -> None:
            # uvicorn calls this when its parser rejects the bytes (a bad request line, header or chunk
            # size). Nothing after them can be parsed, so the connection closes after this response, which
            # is written as bytes for both parsers: h11's state machine has already failed on the request.
            self.transport.write(bad_request_response(msg, self.server_state.default_headers))
            self.transport.close()

    return CoalescingHttpProtocol
