"""What one HTTP connection and one request may cost the server before any route looks at it: the bytes
and lines of a request head, the bytes of a body, how long each may take to arrive, and how many
connections are open at once. `turnout serve` sets them from its flags (`--max-body-bytes`, ...).

Where each is enforced: the request head, the read timeouts and the connection limit in our uvicorn
protocol (transport.py, which answers in OpenAI's error shape: no route is known yet); the body and its
Content-Type in the ASGI middleware of body_guard.py (the route is known there, and answers in its
protocol's shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class HttpLimits:
    max_body_bytes: int = 8 * 1024 * 1024
    """Most bytes of a request body; more is a 413, sent as soon as a Content-Length says so (the body is
    not read) or as soon as a chunked body's count passes it. The longest prompt any context can hold is
    about max_model_len x 100 bytes of JSON (a token can be many escaped characters): 8 MiB covers ~80k
    tokens of that, and far more of ordinary text, which the router refuses anyway once it cannot fit."""
    max_header_bytes: int = 32 * 1024
    """Most bytes of a request head (request line and header lines); more is a 431. Big enough for long
    bearer tokens and proxies' forwarding headers (nginx allows 4 x 8 KiB)."""
    max_header_count: int = 100
    """Most header lines in a request head; more is a 431 (Apache's LimitRequestFields)."""
    header_timeout: float = 10.0
    """Seconds a request head may take to arrive, from its first byte (from the connection's opening, for
    its first request). A head not complete by then is answered 408 and the connection closed; a new
    connection that sent nothing is closed."""
    body_timeout: float = 30.0
    """Seconds a request body may take to arrive once its head has; slower is a 408 (so a Content-Length
    larger than the body sent cannot hold a connection)."""
    keep_alive_timeout: float = 5.0
    """Seconds an idle keep-alive connection stays open waiting for its next request (uvicorn's
    timeout_keep_alive)."""
    max_connections: int = 1024
    """Most connections open at once. At the limit, a new connection closes the one that has gone longest
    without a request in flight (idle, or slowly sending its head), so slow clients cannot hold every
    connection; when every connection has a request in flight, the new one is answered 503. The process's
    open-file limit (`ulimit -n`) must be above it."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{field.name} must be an integer >= 1, got {value!r}")
            if field.type == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                          or not math.isfinite(value) or value <= 0):
                raise ValueError(f"{field.name} must be a number of seconds > 0, got {value!r}")
