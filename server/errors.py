"""The one place that turns exceptions into HTTP status codes and OpenAI error bodies, and into gRPC status
codes (with the same messages)."""

from __future__ import annotations

import logging
import sys
import traceback

import grpc
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from backends.errors import EngineDead, InvalidRequest, ModelNotFound, Overloaded, TurnoutError
from server.access_log import text_fields
from server.observe import current_request_id

logger = logging.getLogger(__name__)

TRACEBACK_FRAMES = 5
"""Frames of an unhandled error's traceback that are logged: the innermost, where it was raised."""


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": writable(message), "type": error_type, "param": writable(param), "code": code}}


def writable(text: str | None) -> str | None:
    """`text` with any lone surrogate escaped, so that a message quoting a client's bad input can be sent
    (UTF-8 has no encoding for one; writing it would fail the error response itself)."""
    if text is None or text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(exc: TurnoutError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.error_type, exc.param, exc.code), status_code=exc.status_code)


def from_validation_error(exc: ValidationError) -> InvalidRequest:
    """The first pydantic error, with its field path as `param` and the offending value quoted."""
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
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


# TGI's own API answers in TGI's shape and status codes (router/src/server.rs), which its clients parse.
_TGI_ERRORS = {  # turnout status -> (TGI status, error_type, message prefix)
    400: (422, "validation", "Input validation error: "),
    404: (422, "validation", "Input validation error: "),
    429: (429, "overloaded", ""),
    503: (429, "overloaded", ""),
}


def tgi_body(message: str, error_type: str) -> dict:
    return {"error": writable(message), "error_type": error_type}


def tgi_error_body(exc: TurnoutError) -> tuple[int, dict]:
    failed = (424, "generation", "Request failed during generation: ")
    status, error_type, prefix = _TGI_ERRORS.get(exc.status_code, failed)
    return status, tgi_body(prefix + exc.message, error_type)


def tgi_error_response(exc: Exception) -> JSONResponse:
    status, body = tgi_error_body(to_turnout_error(exc))
    return JSONResponse(body, status_code=status)


# Most specific first: ContextLengthExceeded is an InvalidRequest, so it is INVALID_ARGUMENT too.
_GRPC_CODES: list[tuple[type[TurnoutError], grpc.StatusCode]] = [
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (EngineDead, grpc.StatusCode.UNAVAILABLE),
]


def grpc_status(exc: TurnoutError) -> grpc.StatusCode:
    """The gRPC code for an error; its details are `exc.message`, exactly the HTTP error's message."""
    for cls, code in _GRPC_CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL
