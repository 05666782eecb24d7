"""GET /playground (the page), GET /playground/NAME (its files) and GET / for browsers.

The files are read once, at import, from the package's static/ folder into a table keyed by file name: a
request names an entry of that table or gets a 404, so no path a client sends (`..`, `%2e%2e`, a folder)
ever reaches the filesystem.

Caching: every answer carries an ETag (a hash of the file) and `Cache-Control: no-cache`, which lets a
browser keep the file but makes it ask each time (`If-None-Match`, answered 304 with no body). Versioned
names with a long max-age would save that round trip, but need a build step that renames the files and
rewrites the page; on a loopback or LAN server the round trip costs less than a stale page after an
upgrade would.

The page and its files hold no secret, so they are served without an API key even on a server that
requires one (a browser cannot send a key when it opens a page): the page's own API calls carry the key the
user types into it (server/http/auth_middleware.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

PAGE_PATH = "/playground"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""The kinds of file served; a file of another kind in static/ is not."""
SECURITY_HEADERS = {
    # The page may load only its own files and call only this server: no CDN, no inline script, no framing.
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def _load() -> dict[str, StaticFile]:
    files = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in CONTENT_TYPES:
            body = entry.read_bytes()
            files[entry.name] = StaticFile(body, CONTENT_TYPES[suffix],
                                           '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return files


FILES = _load()
ASSET_PATHS = frozenset(f"{PAGE_PATH}/{name}" for name in FILES if name != "index.html")


def _answer(request: Request, file: StaticFile) -> Response:
    headers = {"etag": file.etag, "cache-control": "no-cache", **SECURITY_HEADERS}
    if file.etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(file.body, headers={**headers, "content-type": file.content_type})


def _etags(if_none_match: str) -> set[str]:
    """The entity tags of an If-None-Match header; weak ones (W/"...") match too, as RFC 9110 says for GET."""
    return {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}


async def page(request: Request) -> Response:
    return _answer(request, FILES["index.html"])


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    file = FILES.get(name) if name != "index.html" else None
    if file is None:
        raise HTTPException(404, f"no file {name!r} in the playground")
    return _answer(request, file)


async def slash(request: Request) -> Response:
    """/playground/ is the page's own address with a slash; its files' relative names would not resolve."""
    return RedirectResponse(PAGE_PATH, status_code=308)


def wants_html(request: Request) -> bool:
    """A browser opening an address asks for text/html by name; TGI's and OpenAI's clients, curl and
    probes do not (they send */*, application/json or nothing)."""
    accept = request.headers.get("accept", "")
    return any(part.split(";", 1)[0].strip().lower() == "text/html" for part in accept.split(","))


async def root(request: Request) -> Response:
    """GET / from a browser goes to the playground. Anything else asking GET / gets what it always got, TGI's
    405 (TGI's API is POST / only), so no TGI client sees a page where it expects JSON."""
    if wants_html(request):
        return RedirectResponse(PAGE_PATH, status_code=307)
    raise HTTPException(405, headers={"Allow": "POST"})


ROUTES = [
    Route(PAGE_PATH, page, methods=["GET"]),
    Route(PAGE_PATH + "/", slash, methods=["GET"]),
    Route(PAGE_PATH + "/{name:path}", asset, methods=["GET"]),
    Route("/", root, methods=["GET"]),
]
"""GET routes only (Starlette adds HEAD). Not in the OpenAPI document (server/openapi.py says why)."""


def is_page(method: str, path: str) -> bool:
    """A request for the page, its files or the browsers' GET /: served without an API key."""
    return method in ("GET", "HEAD") and (path == "/" or path == PAGE_PATH or path.startswith(PAGE_PATH + "/"))
