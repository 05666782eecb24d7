"""ASGI middleware: one RequestRecord per HTTP request (request id in, X-Request-Id out, metrics, access
log, route span). Handlers reach the record with `record_of(request)`."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request

from server.telemetry import RequestRecord, Telemetry, mint_request_id

REQUEST_ID_HEADER = "x-request-id"
RECORD_SCOPE_KEY = "turnout.record"


def record_of(request: Request) -> RequestRecord | None:
    return request.scope.get(RECORD_SCOPE_KEY)


class ObservabilityMiddleware:
    def __init__(self, app, telemetry: Telemetry, paths: set[str]):
        self.app = app
        self.telemetry = telemetry
        self.paths = paths
        """Known routes; any other path is labelled `unmatched` (clients must not grow the label set)."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.paths else "unmatched"
        record = self.telemetry.begin("http", endpoint, Headers(scope=scope).get(REQUEST_ID_HEADER) or None)
        scope[RECORD_SCOPE_KEY] = record
        status = "500"

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
                record.request_id = record.request_id or mint_request_id()
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    headers[REQUEST_ID_HEADER] = record.request_id
                if record.rate_ticket is not None:  # a rate-limited key's standing, as OpenAI reports it
                    for name, value in record.rate_ticket.headers().items():
                        headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.telemetry.finish(record, status)


def observed(request: Request, backend, generate_request):
    """`backend.generate`, observed into the request's record (the same wrapper gRPC uses)."""
    record = record_of(request)
    if record is None:  # an app built without the middleware
        return backend.generate(generate_request)
    return request.app.state.telemetry.observed(record, backend, generate_request)


async def embedded(request: Request, backend, embedding_request):
    """`backend.embed`, observed into the request's record (the same wrapper gRPC would use)."""
    record = record_of(request)
    if record is None:  # an app built without the middleware
        return await backend.embed(embedding_request)
    return await request.app.state.telemetry.embedded(record, backend, embedding_request)
