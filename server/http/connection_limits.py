"""The limits of limits.py that hold before a request reaches the app, as mixins over uvicorn's HTTP
protocol classes (transport.py assembles them): the bytes and lines of a request head (431), the time a
head may take (408), the number of connections (503, or room made by shedding an idle one), and closing
a connection without losing the answer written just before.

uvicorn bounds none of these itself: httptools' parser takes heads of any size and any number of
headers, nothing times a head out (a connection that sends one byte every few seconds, or nothing at all,
is held forever), and its `limit_concurrency` counts connections only once their head has arrived, so
slow clients fill it while they are never refused; beyond it, it answers text/plain 503s.

Closing without losing the answer: closing a socket with bytes still arriving makes the kernel reset the
connection, and a client still writing its body (the one we answered 413) then gets a reset instead of
our answer. So after a refusal, or a response sent before its request's body arrived, we shut down our
side, drop what still comes, and close at the client's end of stream or after the keep-alive timeout.

A response sent before its request's body is all in (a 401, 413 or 415, a 404 to a POST) says
`connection: close`: the rest of that body stands between it and any next request, so the connection
closes after it, and a client that reused it would lose its next request to the close.
"""

from __future__ import annotations

import asyncio
import time

import h11

from server.http.limits import HttpLimits
from server.http.refusals import Refused, refusal_response


class LimitedConnection:
    """What both parsers share: the mixin over uvicorn's protocol class, before the parser's own mixin
    (HttptoolsHeads, H11Heads), which reports a head's progress through `head_began`, `check_head` and
    `head_complete` and says whether part of a head is in (`head_in_progress()`)."""

    limits: HttpLimits  # the class's, from transport.protocol_over

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests_open = 0
        """Requests whose head is in and whose response is not finished."""
        self.idle_since: float | None = None
        """When the connection last had no request in flight; None while it has one. At the connection
        limit, the connection idle longest is shed."""
        self.refusal: Refused | None = None
        """Set by a check that makes the parser fail, for send_400_response to answer instead of a 400."""
        self.over_capacity = False
        self.lingering = False
        self.head_timer: asyncio.TimerHandle | None = None
        self.linger_timer: asyncio.TimerHandle | None = None

    # uvicorn's hooks

    @property
    def cycle(self):
        """The current request's uvicorn RequestResponseCycle (None before the first head is in)."""
        return self._cycle

    @cycle.setter
    def cycle(self, cycle) -> None:
        # uvicorn assigns each new request's cycle here, before its ASGI task first runs, so the task's
        # `self.send` lookup finds the wrapper.
        self._cycle = cycle
        if cycle is not None:
            cycle.send = says_close_before_the_body(cycle)

    def connection_made(self, transport) -> None:
        super().connection_made(ClosesGently(transport, self))
        self.idle_since = time.monotonic()
        self.start_head_timer()  # a connection that never sends a head is closed too
        self.make_room()

    def connection_lost(self, exc) -> None:
        self.cancel_head_timer()
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # answered and closing: what still comes is dropped
        super().data_received(data)

    def on_response_complete(self) -> None:
        self.requests_open -= 1
        # A response finished before its request's body arrived (a 413, a 404 to a POST): the rest of the
        # body is nobody's, and the client sending it slowly must not hold the connection.
        body_unread = self.cycle.response_complete and self.cycle.more_body
        super().on_response_complete()
        if body_unread:
            self.close_lingering()
        elif not self.requests_open and not self.transport.is_closing():
            self.idle_since = time.monotonic()
            if self.head_in_progress():  # the next request's head began while this one was answered
                self.start_head_timer()

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this when its parser rejects the bytes (a bad request line, header or chunk size),
        # and when one of our checks raised in the parser's callbacks. Nothing after them can be parsed,
        # so the connection closes after this response, which is written as bytes for both parsers (h11's
        # state machine has already failed on the request).
        refusal = self.refusal or Refused(400, msg)
        self.refuse(refusal.status, refusal.message)

    # the head

    def head_began(self) -> None:
        """The first bytes of a request head arrived."""
        if self.head_timer is None and not self.requests_open:
            self.start_head_timer()

    def check_head(self, size: int, count: int) -> None:
        """Raises Refused(431) when `size` bytes or `count` header lines of a head are over the limits."""
        if size > self.limits.max_header_bytes:
            raise self.refused(431, head_too_large(self.limits))
        if count > self.limits.max_header_count:
            raise self.refused(431, f"request head has more than {self.limits.max_header_count} header lines")

    def head_complete(self) -> None:
        """A request head is in, and passed check_head: its request starts, unless the connection is over
        the limit."""
        self.cancel_head_timer()
        if self.over_capacity:
            raise self.refused(503, at_capacity(self.limits))
        self.requests_open += 1
        self.idle_since = None

    def start_head_timer(self) -> None:
        self.cancel_head_timer()
        self.head_timer = self.loop.call_later(self.limits.header_timeout, self.head_timed_out)

    def cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or self.lingering or self.requests_open:
            return
        if self.head_in_progress():
            self.refuse(408, f"request head not received within {self.limits.header_timeout:g} s")
        else:  # it sent nothing: closed as an idle keep-alive connection is
            self.close_now()

    # connections

    def make_room(self) -> None:
        """At the connection limit, the connection that has gone longest without a request in flight is
        closed for this one; if every other connection has one, this one is refused when its head is in."""
        if len(self.connections) <= self.limits.max_connections:  # this one included
            return
        idle = [c for c in self.connections if c is not self and getattr(c, "idle_since", None) is not None]
        if not idle:
            self.over_capacity = True
            return
        shed = min(idle, key=lambda c: c.idle_since)
        if shed.head_in_progress():
            shed.refuse(503, at_capacity(self.limits))
        else:
            shed.close_now()

    def refused(self, status: int, message: str) -> Refused:
        self.refusal = Refused(status, message)
        return self.refusal

    def refuse(self, status: int, message: str) -> None:
        self.transport.write(refusal_response(status, message, self.server_state.default_headers))
        self.close_lingering()

    def close_now(self) -> None:
        self.connections.discard(self)
        self.cancel_head_timer()
        self.transport.close()

    def close_lingering(self) -> None:
        """Close after what was written, without losing it to a reset (the module's docstring)."""
        # On its way out, it no longer counts against max_connections (uvicorn forgets it when it is lost).
        self.connections.discard(self)
        self.cancel_head_timer()
        if self.lingering or self.transport.is_closing():
            return
        self.lingering = True  # from here on, ClosesGently closes at once
        if not self.transport.can_write_eof():  # TLS
            self.transport.close()
            return
        self.transport.write_eof()
        self.linger_timer = self.loop.call_later(self.limits.keep_alive_timeout, self.transport.close)


def says_close_before_the_body(cycle):
    """`cycle.send`, adding `connection: close` to a response that starts before its request's body is in
    (the module's docstring). uvicorn then closes once the response is written, through ClosesGently."""
    send = cycle.send

    async def send_saying_close(message) -> None:
        if message["type"] == "http.response.start" and cycle.more_body:
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return send_saying_close


class ClosesGently:
    """A connection's transport whose close() lingers while the request's body may still be arriving, so
    that the answer just written is not lost to a reset (the module's docstring); otherwise, and once the
    connection lingers, it closes at once. Everything else is the wrapped transport's."""

    def __init__(self, transport, connection: LimitedConnection):
        self._transport = transport
        self._connection = connection

    def close(self) -> None:
        cycle = self._connection.cycle
        if cycle is not None and cycle.more_body and not self._connection.lingering:
            self._connection.close_lingering()
        else:
            self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class HttptoolsHeads:
    """httptools' callbacks counted against the limits. The parser hands over the request target in
    pieces and each header once it is whole, so a header line still arriving is counted by the reads:
    every read that ends inside a head counts whole (a pipelined head that begins mid-read is counted with
    the end of the request before it: over, never under)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_open = False
        self.head_bytes_read = 0
        self.head_size = 0
        self.header_count = 0

    def head_in_progress(self) -> bool:
        return self.head_open

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head_open and not self.lingering:
            self.head_bytes_read += len(data)
            if self.head_bytes_read > self.limits.max_header_bytes:
                self.refuse(431, head_too_large(self.limits))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_open = True
        self.head_bytes_read = self.head_size = self.header_count = 0
        self.head_began()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self.head_size += len(url)
        self.check_head(self.head_size, self.header_count)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self.head_size += len(name) + len(value) + 4  # ": " and CRLF
        self.header_count += 1
        self.check_head(self.head_size, self.header_count)

    def on_headers_complete(self) -> None:
        self.head_open = False
        self.head_complete()
        super().on_headers_complete()


class H11Heads:
    """h11's view of the head: its own limit on an unfinished event (the head, until it is whole) set to
    ours, and each whole head checked before uvicorn sees it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conn = CheckedH11Connection(self)  # replaces uvicorn's, before any byte went in

    def head_in_progress(self) -> bool:
        return self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self.head_began()
        super().data_received(data)

    def check_request(self, request: h11.Request) -> None:
        size = len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)
        self.check_head(size, len(request.headers))
        self.head_complete()


class CheckedH11Connection(h11.Connection):
    """h11's server side, handing each request head to the protocol's `check_request`. A refusal becomes
    the RemoteProtocolError that uvicorn answers through send_400_response, which answers it."""

    def __init__(self, protocol: H11Heads):
        super().__init__(h11.SERVER, max_incomplete_event_size=protocol.limits.max_header_bytes)
        self.protocol = protocol

    def next_event(self):
        awaiting_head = self.their_state is h11.IDLE
        try:
            event = super().next_event()
            if isinstance(event, h11.Request):
                self.protocol.check_request(event)
        except Refused as refusal:
            raise h11.RemoteProtocolError(refusal.message, error_status_hint=refusal.status) from None
        except h11.RemoteProtocolError as error:
            if awaiting_head and error.error_status_hint == 431:  # its "Receive buffer too long"
                self.protocol.refused(431, head_too_large(self.protocol.limits))
            raise
        return event


def head_too_large(limits: HttpLimits) -> str:
    return f"request head is larger than {limits.max_header_bytes} bytes"


def at_capacity(limits: HttpLimits) -> str:
    return f"the server is at its limit of {limits.max_connections} connections; retry later"
