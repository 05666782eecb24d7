"""ASGI middleware: the body of a POST to a route that reads one must say it is JSON (415 otherwise), be at
most max_body_bytes (413) and arrive within body_timeout (408), each refusal in the error shape of the
route's API (OpenAI's, or TGI's on TGI's routes).

Why here and not in the uvicorn protocol: the route, and so the shape its clients parse, is known here;
and uvicorn hands a body over as it arrives, buffering at most 64 KiB ahead of the app (its flow control
stops reading beyond that), so counting here still stops reading within 64 KiB of the limit. A
Content-Length over the limit is refused before anything of the body is read. The body is read whole
here and handed to the route as one message: every route reads it whole anyway. What a refused request
still sends is dropped by the protocol, which then closes the connection (connection_limits.py).

Why 415: a web page open in a browser may POST to any address, a local server's included, without the
browser asking the server first (a CORS preflight) only with an HTML form's Content-Types (text/plain,
application/x-www-form-urlencoded, multipart/form-data) or none. application/json needs the preflight,
which fails unless --allowed-origins lets the page's origin in; refusing everything else keeps a page the
user happens to have open from making the server generate.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from server.errors import error_body, tgi_body
from server.http.limits import HttpLimits
from server.http.refusals import Refused

_TGI_ERROR_TYPES = {408: "request_timeout", 413: "payload_too_large", 415: "unsupported_media_type"}


def is_json(content_type: str | None) -> bool:
    """`application/json`, in any case, with or without parameters (`; charset=utf-8`)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


class BodyGuard:
    def __init__(self, app, limits: HttpLimits, paths: set[str], tgi_paths: set[str]):
        self.app = app
        self.limits = limits
        self.paths = paths
        """The routes that take a POST body; a POST elsewhere is routing's 404 or 405, its body unread."""
        self.tgi_paths = tgi_paths
        """Routes answered in TGI's error shape."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        try:
            self.check_head(Headers(scope=scope))
            body = await self.read_body(receive)
        except Refused as refusal:
            await self.answer(scope, refusal, receive, send)
            return
        await self.app(scope, replaying(body, receive), send)

    def check_head(self, headers: Headers) -> None:
        content_type = headers.get("content-type")
        if not is_json(content_type):
            got = f"got {content_type!r}" if content_type is not None else "the request has none"
            raise Refused(415, f"Content-Type must be application/json; {got}")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limits.max_body_bytes:  # the parser has checked its form
            raise Refused(413, f"request body is {int(length)} bytes, more than the limit of "
                               f"{self.limits.max_body_bytes} bytes")

    async def read_body(self, receive) -> dict:
        """The whole body as one `http.request` message, or the `http.disconnect` that came instead."""
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return message  # the client left: the route finds it gone, as it always has
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    if size > self.limits.max_body_bytes:
                        raise Refused(413, f"request body is more than the limit of {self.limits.max_body_bytes}"
                                           " bytes")
                    if not message.get("more_body", False):
                        return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        except TimeoutError:
            raise Refused(408, f"request body not received within {self.limits.body_timeout:g} s") from None

    async def answer(self, scope, refusal: Refused, receive, send) -> None:
        if scope["path"] in self.tgi_paths:
            body = tgi_body(refusal.message, _TGI_ERROR_TYPES[refusal.status])
        else:
            body = error_body(refusal.message, "invalid_request_error")
        await JSONResponse(body, status_code=refusal.status)(scope, receive, send)


def replaying(first: dict, receive):
    """`receive`, but `first` is its first message (later calls wait for the client's disconnect)."""
    pending = [first]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed
