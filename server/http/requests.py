"""Reading a request: JSON body -> validated schema, and the request id."""

from __future__ import annotations

import json
import math
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from backends.errors import InvalidRequest
from server.errors import from_validation_error
from server.http.auth_middleware import key_of
from server.http.json_limits import MAX_DEPTH, check_body
from server.http.telemetry_middleware import record_of
from server.telemetry import check_request_id, mint_request_id

M = TypeVar("M", bound=BaseModel)


async def json_object(request: Request) -> dict:
    """The request body as a JSON object, or InvalidRequest saying what it is instead (json_limits.py: how
    deep it may nest, and no lone surrogates)."""
    raw = await request.body()
    data = loads_object(raw)
    check_body(data, raw)
    return data


def loads_object(raw: bytes) -> dict:
    """The body parsed as a JSON object, before json_limits' checks of what it holds."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"request body: JSON nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {type(data).__name__}")
    return data


async def parse_body(request: Request, schema: type[M]) -> M:
    return validated(await json_object(request), schema)


def validated(data: dict, schema: type[M]) -> M:
    """`data` as `schema`, strictly: a value of the wrong JSON type (`"stream": 0`, `"temperature": false`,
    `"max_tokens": "2"`) is refused, as OpenAI's API refuses it, not converted (an integer for a number is
    fine)."""
    try:
        return schema.model_validate(data, strict=True)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def request_id(request: Request, prefix: str) -> str:
    """The client's X-Request-Id when it sent one, else a fresh id with the endpoint's prefix; the
    middleware returns it in the X-Request-Id response header and logs it."""
    record = record_of(request)
    client_id = record.request_id if record else request.headers.get("x-request-id")
    if client_id:
        check_request_id(client_id, "x-request-id")
    rid = client_id or mint_request_id(prefix)
    if record is not None:
        record.request_id = rid
    return rid


def resolve_model(request: Request, model: str | None):
    """The backend serving `model` for this request's API key (PermissionDenied for a model it may not use)."""
    return request.app.state.router.resolve(model, key_of(request))


CLIENT_READ_TIMEOUT_HEADER = "x-stainless-read-timeout"
"""The read timeout, in seconds, OpenAI's official clients send with each request: how long they wait for
each next byte of the answer before giving up."""


def client_read_timeout(request: Request) -> float | None:
    """The client's own read timeout for this request, when it says (a bad value is ignored, not an error)."""
    value = request.headers.get(CLIENT_READ_TIMEOUT_HEADER)
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds > 0 else None


def session_id(request: Request) -> str | None:
    """The client's session id, in the header the router's prefix_affinity reads (None: absent, or off)."""
    header = request.app.state.router.settings.affinity_session_header
    return (request.headers.get(header) or None) if header else None
