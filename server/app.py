"""Build the Starlette application: routes, error handlers and the router's lifecycle."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Sequence
from http import HTTPStatus

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backends.errors import TurnoutError
from server import openapi
from server.errors import error_body, error_response, handle_exception, openai_error_response, tgi_body
from server.http.auth_middleware import OPS_PATHS, ApiKeyMiddleware
from server.http.body_guard import BodyGuard
from server.http.limits import HttpLimits
from server.http.ops_routes import health, metrics, ready
from server.http.requests import loads_object
from server.http.streams import ClientDisconnected
from server.http.telemetry_middleware import REQUEST_ID_HEADER, ObservabilityMiddleware
from server.openai import tokenize as openai_tokenize
from server.openai.chat import create_chat_completion
from server.openai.completions import create_completion
from server.openai.embeddings import create_embedding
from server.openai.models import list_models
from server.playground import routes as playground_routes
from server.router import Router
from server.telemetry import Telemetry
from server.tgi import routes as tgi

logger = logging.getLogger(__name__)

async def tokenize(request: Request):
    """POST /tokenize is both vLLM's and TGI's. The body is parsed once; one with `inputs` (the field TGI's has
    and vLLM's has not) is TGI's, answered in TGI's shape, errors included; any other is vLLM's."""
    raw = await request.body()
    data = loads_object(raw)
    if "inputs" in data:
        return await tgi.tokenize(request)
    return await openai_tokenize.tokenize(request, data, raw)


TGI_ROUTES = [  # TGI's native API
    Route("/", tgi.compat_generate, methods=["POST"]),
    Route("/generate", tgi.generate, methods=["POST"]),
    Route("/generate_stream", tgi.generate_stream, methods=["POST"]),
    Route("/info", tgi.info, methods=["GET"]),
]
ROUTES = [
    Route("/v1/completions", create_completion, methods=["POST"]),
    Route("/v1/chat/completions", create_chat_completion, methods=["POST"]),
    Route("/v1/embeddings", create_embedding, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/tokenize", tokenize, methods=["POST"]),
    Route("/detokenize", openai_tokenize.detokenize, methods=["POST"]),
    *TGI_ROUTES,
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
]
_TGI_PATHS = {route.path for route in TGI_ROUTES}


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Routing's errors (404 for an unknown path, 405 with its Allow header for a wrong method); on TGI's
    paths in TGI's shape, which its clients parse."""
    if request.scope["path"] in _TGI_PATHS:
        error_type = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")  # "method_not_allowed"
        return JSONResponse(tgi_body(str(exc.detail), error_type), status_code=exc.status_code, headers=exc.headers)
    error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return JSONResponse(error_body(str(exc.detail), error_type), status_code=exc.status_code, headers=exc.headers)


async def _turnout_error(request: Request, exc: TurnoutError) -> JSONResponse:
    return error_response(exc)


async def _client_gone(request: Request, exc: ClientDisconnected | ClientDisconnect) -> Response:
    return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


class UnhandledErrors:
    """ASGI middleware: an error no handler caught is answered with a 500 in OpenAI's shape and logged
    once (`to_turnout_error`), and ends here. Starlette's last-resort handler answers too, but then
    re-raises, and uvicorn logs the whole traceback again. Inside ObservabilityMiddleware, so the 500
    carries the request id and is counted with its status."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_noting_start(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except Exception as exc:
            response = openai_error_response(exc)
            if not started:
                await response(scope, receive, send)
            # else the response cannot be finished: uvicorn closes the connection (logging one line)


def build_app(router: Router, telemetry: Telemetry | None = None, grpc_port: int | None = None,
              grpc_host: str = "127.0.0.1", keys_for_ops: bool = False,
              limits: HttpLimits | None = None, allowed_origins: Sequence[str] = (),
              playground: bool = True) -> Starlette:
    """`grpc_port` (None or 0: no gRPC) starts the gRPC API in the same event loop, over the same router.
    With API keys (`router.keys`), every route needs one; /health, /ready and /metrics too if
    `keys_for_ops`. `limits` bounds request bodies (the rest of it is the uvicorn protocol's:
    transport.http_protocol); `allowed_origins` lets web pages of those origins call the API (CORS; none by
    default). `playground`: serve the page at /playground, where GET / sends browsers (server/playground/)."""
    telemetry = telemetry or Telemetry()
    pages = playground_routes.ROUTES if playground else []
    is_page = playground_routes.is_page if playground else (lambda method, path: False)
    known_paths = {r.path for r in ROUTES} | ({playground_routes.PAGE_PATH, *playground_routes.ASSET_PATHS}
                                               if playground else set())
    cors = [Middleware(CORSMiddleware, allow_origins=list(allowed_origins), allow_methods=["GET", "POST"],
                       allow_headers=["*"], expose_headers=[REQUEST_ID_HEADER])] if allowed_origins else []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        started = time.monotonic()
        await router.start()
        grpc_server = None
        if grpc_port:
            from server.grpc.server import GrpcServer

            grpc_server = GrpcServer(router, telemetry, grpc_host, grpc_port)
            await grpc_server.start()
            logger.info("gRPC API on %s", grpc_server.address)
        # What is loaded by now (libraries, models, tokenizers: ~400k objects with the bundled model) lives
        # as long as the server. Frozen, it is not rescanned by the garbage collector's full collections,
        # which otherwise walk all of it (up to ~190 ms each here) while the loop or the engine waits.
        gc.collect()
        gc.freeze()
        app.state.ready = True
        logger.info("ready in %.1f s: %s", time.monotonic() - started, ", ".join(router.pools))
        try:
            yield
        finally:
            app.state.ready = False
            gc.unfreeze()  # leave the interpreter's shutdown its usual collections (extensions check for leaks)
            if grpc_server is not None:
                await grpc_server.stop()
            await router.close()

    app = Starlette(
        routes=[*ROUTES, *pages],  # after TGI's POST /, which stays the route of every POST /
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _http_error,
            TurnoutError: _turnout_error,
            ClientDisconnected: _client_gone,
            ClientDisconnect: _client_gone,  # Starlette's: the client left while its body was being read
            Exception: handle_exception,  # only for errors raised outside UnhandledErrors
        },
        middleware=[
            *cors,  # outermost, so that a refusal further in carries the headers a page needs to read it
            Middleware(ObservabilityMiddleware, telemetry=telemetry, paths=known_paths),
            Middleware(UnhandledErrors),
            Middleware(ApiKeyMiddleware, keys=router.keys, tgi_paths=frozenset(_TGI_PATHS),
                       open_paths=frozenset() if keys_for_ops else OPS_PATHS, open_pages=is_page),
            # After the key: a client without one does not get its body read.
            Middleware(BodyGuard, limits=limits or HttpLimits(), tgi_paths=_TGI_PATHS,
                       paths={r.path for r in ROUTES if "POST" in r.methods}),
        ],
    )
    app.state.router = router
    app.state.telemetry = telemetry
    app.state.ready = False
    app.state.started_at = int(time.time())
    app.state.openapi = openapi.encoded(openapi.Auth(router.keys.required, keys_for_probes=keys_for_ops))
    return app
