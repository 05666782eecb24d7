"""ASGI middleware: the API key of each HTTP request, checked at the door (server/keys.py).

The key is read from `Authorization: Bearer KEY` (what OpenAI clients send) or `x-api-key: KEY`. A missing
or unknown key is a 401 with `WWW-Authenticate`, in the shape of the route's protocol, before the body is
read; a known key is put on the request for the handlers (`key_of`), which check it against the model
(403 for a model it may not use). /health, /ready and /metrics stay open unless the server is told
otherwise (`--api-key-for-ops`), so probes and scrapers need no key. Web pages (`open_pages`: the playground)
are always open: a browser cannot send a key when it opens a page, and the page holds no secret; its own API
calls carry the key its user types. Keys are never logged: the access log
names the key (`ApiKey.name`), never its value.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import Request

from server.admission import Unauthenticated
from server.errors import error_response, tgi_error_response
from server.http.telemetry_middleware import RECORD_SCOPE_KEY
from server.keys import ApiKey, KeyRing
from server.telemetry import RequestRecord

_SCOPE_KEY = "turnout.api_key"
OPS_PATHS = frozenset({"/health", "/ready", "/metrics"})


def key_of(request: Request) -> ApiKey | None:
    """The request's key; None when the server takes requests without one."""
    return request.scope.get(_SCOPE_KEY)


def presented_key(headers: Headers | dict) -> str | None:
    authorization = headers.get("authorization") or ""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


class ApiKeyMiddleware:
    def __init__(self, app, keys: KeyRing, open_paths: frozenset[str], tgi_paths: frozenset[str],
                 open_pages: Callable[[str, str], bool] = lambda method, path: False):
        self.app, self.keys = app, keys
        self.open_paths, self.tgi_paths = open_paths, tgi_paths
        self.open_pages = open_pages
        """(method, path) -> whether the request is for a web page, served without a key."""

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or not self.keys.required or scope["path"] in self.open_paths
                or self.open_pages(scope["method"], scope["path"])):
            await self.app(scope, receive, send)
            return
        presented = presented_key(Headers(scope=scope))
        key = self.keys.find(presented) if presented else None
        if key is None:
            error = Unauthenticated("missing API key: send `Authorization: Bearer KEY` (or `x-api-key: KEY`)"
                                    if presented is None else "invalid API key")
            answer = tgi_error_response if scope["path"] in self.tgi_paths else error_response
            await answer(error)(scope, receive, send)
            return
        scope[_SCOPE_KEY] = key
        record: RequestRecord | None = scope.get(RECORD_SCOPE_KEY)
        if record is not None:
            record.api_key = key
        await self.app(scope, receive, send)
