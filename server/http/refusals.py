"""What the HTTP protocol layer answers when it refuses a request itself (it does not parse, or breaks a
limit of limits.py) before any route has seen it: a whole response, in OpenAI's error shape since no route
is known, for a connection about to close."""

from __future__ import annotations

import json
from http import HTTPStatus

from server.errors import error_body


class Refused(Exception):
    """A request refused by a limit of limits.py: the status and message to answer it with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def refusal_response(status: int, message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    # 503 is the server's state (at its connection limit); every other refusal is the request's fault.
    error_type = "service_unavailable" if status == 503 else "invalid_request_error"
    body = json.dumps(error_body(message, error_type)).encode()
    head = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]  # server, date
    head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
             b"connection: close\r\n\r\n"]
    return b"".join(head) + body
