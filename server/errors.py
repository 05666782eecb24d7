"""The one place that says what an error looks like on the wire: `ERROR_TABLE` gives each error class its
HTTP status and OpenAI `type`/`code`, its TGI status and `error_type`, and its gRPC code (the message is the
same everywhere). Backends raise classes (backends/errors.py); they never pick a status."""

from __future__ import annotations

import logging
import math
import re
import sys
import traceback
from dataclasses import dataclass

import grpc
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from backends.errors import (
    ContextLengthExceeded,
    EngineDead,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    RequestFailed,
    StreamInterrupted,
    TurnoutError,
    Unavailable,
    UpstreamError,
)
from server.access_log import text_fields
from server.admission import (
    DeadlineExceeded,
    Draining,
    PermissionDenied,
    QueueFull,
    RateLimited,
    Unauthenticated,
)
from server.telemetry import current_request_id

logger = logging.getLogger(__name__)

TRACEBACK_FRAMES = 5
"""Frames of an unhandled error's traceback that are logged: the innermost, where it was raised."""


@dataclass(frozen=True)
class WireError:
    """How one error class is answered, protocol by protocol."""

    http_status: int
    openai_type: str
    openai_code: str | None
    tgi_status: int
    tgi_type: str
    """TGI's own statuses and types (router/src/server.rs), which its clients parse: 422 validation,
    429 overloaded, 424 generation."""
    grpc_code: grpc.StatusCode


_S = grpc.StatusCode
_VALIDATION = (422, "validation")
_OVERLOADED = (429, "overloaded")
_GENERATION = (424, "generation")

# Most specific class first: the first row an error is an instance of maps it. Retryable capacity errors
# are 429/503 with RESOURCE_EXHAUSTED/UNAVAILABLE, a dead engine 503 + UNAVAILABLE (another replica or a
# restart helps), an upstream's failure 502 + UNAVAILABLE; a fault of one request alone is a 500 + INTERNAL.
ERROR_TABLE: tuple[tuple[type[TurnoutError], WireError], ...] = (
    (ContextLengthExceeded, WireError(400, "invalid_request_error", "context_length_exceeded", *_VALIDATION,
                                      _S.INVALID_ARGUMENT)),
    (InvalidRequest, WireError(400, "invalid_request_error", None, *_VALIDATION, _S.INVALID_ARGUMENT)),
    (ModelNotFound, WireError(404, "invalid_request_error", "model_not_found", *_VALIDATION, _S.NOT_FOUND)),
    (Unauthenticated, WireError(401, "invalid_request_error", "invalid_api_key", 401, "authentication",
                                _S.UNAUTHENTICATED)),
    (PermissionDenied, WireError(403, "invalid_request_error", "model_not_allowed", 403, "authorization",
                                 _S.PERMISSION_DENIED)),
    (RateLimited, WireError(429, "rate_limit_error", "rate_limit_exceeded", *_OVERLOADED, _S.RESOURCE_EXHAUSTED)),
    (QueueFull, WireError(429, "server_overloaded", "queue_full", *_OVERLOADED, _S.RESOURCE_EXHAUSTED)),
    (Overloaded, WireError(429, "server_overloaded", None, *_OVERLOADED, _S.RESOURCE_EXHAUSTED)),
    (Draining, WireError(503, "service_unavailable", "draining", *_OVERLOADED, _S.UNAVAILABLE)),
    (Unavailable, WireError(503, "service_unavailable", "model_unavailable", *_OVERLOADED, _S.UNAVAILABLE)),
    (DeadlineExceeded, WireError(504, "timeout_error", "deadline_exceeded", *_GENERATION, _S.DEADLINE_EXCEEDED)),
    (EngineDead, WireError(503, "service_unavailable", "engine_dead", *_GENERATION, _S.UNAVAILABLE)),
    (RequestFailed, WireError(500, "internal_error", "request_failed", *_GENERATION, _S.INTERNAL)),
    (UpstreamError, WireError(502, "upstream_error", None, *_GENERATION, _S.UNAVAILABLE)),
    (StreamInterrupted, WireError(502, "upstream_error", "stream_interrupted", *_GENERATION, _S.UNAVAILABLE)),
    (TurnoutError, WireError(500, "internal_error", None, *_GENERATION, _S.INTERNAL)),
)


def wire(exc: TurnoutError) -> WireError:
    for cls, row in ERROR_TABLE:
        if isinstance(exc, cls):
            return row
    raise TypeError(f"not a TurnoutError: {exc!r}")


def http_status(exc: TurnoutError) -> int:
    return wire(exc).http_status


def openai_code(exc: TurnoutError) -> str | None:
    """The error's own code (an upstream's, say), else its class's."""
    return exc.code or wire(exc).openai_code


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": writable(message), "type": error_type, "param": writable(param), "code": code}}


def writable(text: str | None) -> str | None:
    """`text` with any lone surrogate escaped, so that a message quoting a client's bad input can be sent
    (UTF-8 has no encoding for one; writing it would fail the error response itself)."""
    if text is None or text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def openai_body(exc: TurnoutError) -> dict:
    return error_body(exc.message, wire(exc).openai_type, exc.param, openai_code(exc))


def error_headers(exc: TurnoutError) -> dict[str, str]:
    """The headers an error's answer carries: Retry-After for retryable ones, WWW-Authenticate for a 401."""
    headers = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, Unauthenticated):
        headers["www-authenticate"] = 'Bearer realm="turnout"'
    return headers


def error_response(exc: TurnoutError) -> JSONResponse:
    return JSONResponse(openai_body(exc), status_code=http_status(exc), headers=error_headers(exc))


_UNION_MEMBER = re.compile(r"^([a-z-]+\[.*\]|[A-Z][A-Za-z]*)$")


def from_validation_error(exc: ValidationError) -> InvalidRequest:
    """The first pydantic error, with its field path as `param` and the offending value quoted."""
    first = exc.errors()[0]
    # A union's member shows in the path by its type (tool_choice.literal['none','auto','required']): the
    # field a client wrote is the path without it.
    param = ".".join(str(part) for part in first["loc"] if not _UNION_MEMBER.match(str(part))) or None
    message = first["msg"].removeprefix("Value error, ")
    if "input" in first and first["type"] != "missing" and param:
        message = f"{param}: {message} (got {first['input']!r})"
    elif param:
        message = f"{param}: {message}"
    return InvalidRequest(message, param=param)


def to_turnout_error(exc: Exception) -> TurnoutError:
    if isinstance(exc, TurnoutError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    log_unhandled(exc)
    return TurnoutError(f"internal error: {type(exc).__name__}")


def log_unhandled(exc: BaseException) -> None:
    """One ERROR record, on one line, for an error no handler expected: the request's id, the error, and
    where it was raised. A whole traceback ran to ~70 lines through Starlette's layers, and uvicorn wrote
    it a second time."""
    frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    logger.error("unhandled error: %s", text_fields({
        "request_id": current_request_id(),
        "error": f"{type(exc).__name__}: {exc}",
        "at": " > ".join(f"{_short_path(f.filename)}:{f.lineno} {f.name}" for f in frames),
    }))


def _short_path(filename: str) -> str:
    """`filename` from the import path entry it is under ("starlette/routing.py", "server/app.py")."""
    roots = [root for root in sys.path if root and filename.startswith(root.rstrip("/") + "/")]
    return filename[len(max(roots, key=len).rstrip("/")) + 1:] if roots else filename


def openai_error_response(exc: Exception) -> JSONResponse:
    """Any exception as an OpenAI error response with its status."""
    return error_response(to_turnout_error(exc))


async def handle_exception(request: Request, exc: Exception) -> JSONResponse:
    return openai_error_response(exc)


# TGI prefixes its messages by kind.
_TGI_PREFIXES = {"validation": "Input validation error: ", "overloaded": "", "authentication": "",
                 "authorization": "", "generation": "Request failed during generation: "}


def tgi_body(message: str, error_type: str) -> dict:
    return {"error": writable(message), "error_type": error_type}


def tgi_error_body(exc: TurnoutError) -> tuple[int, dict]:
    row = wire(exc)
    return row.tgi_status, tgi_body(_TGI_PREFIXES[row.tgi_type] + exc.message, row.tgi_type)


def tgi_error_response(exc: Exception) -> JSONResponse:
    error = to_turnout_error(exc)
    status, body = tgi_error_body(error)
    return JSONResponse(body, status_code=status, headers=error_headers(error))


def grpc_status(exc: TurnoutError) -> grpc.StatusCode:
    """The gRPC code for an error; its details are `exc.message`, exactly the HTTP error's message."""
    return wire(exc).grpc_code
