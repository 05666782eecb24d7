"""One table maps every error class to its HTTP status, OpenAI type/code, TGI status/type and gRPC code.

The table must have a row for each `TurnoutError` subclass, found by reflection over every module of
`backends` and `server` (a class added anywhere without a row fails here), and the rows must keep the
semantics clients rely on.
"""

import importlib
import pkgutil

import grpc
import pytest

import backends
import server
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
from server.admission import (
    DeadlineExceeded,
    Draining,
    PermissionDenied,
    QueueFull,
    RateLimited,
    Unauthenticated,
)
from server.errors import ERROR_TABLE, error_headers, grpc_status, http_status, openai_body, tgi_error_body

S = grpc.StatusCode
# Modules that need what CI does not have (an NVIDIA GPU's TensorRT-LLM) are left out of the walk.
_UNIMPORTABLE = ("backends.trtllm",)


def every_error_class() -> set[type[TurnoutError]]:
    for package in (backends, server):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.startswith(_UNIMPORTABLE) and not module.name.endswith(".__main__"):
                importlib.import_module(module.name)
    found, todo = set(), [TurnoutError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return found


def test_every_error_class_has_a_row_of_its_own():
    rows = [cls for cls, _ in ERROR_TABLE]
    assert len(rows) == len(set(rows)), "a class has two rows"
    missing = every_error_class() - set(rows)
    assert not missing, f"no row in server/errors.py ERROR_TABLE for {sorted(c.__name__ for c in missing)}"


def test_rows_run_from_the_most_specific_class_to_the_most_general():
    for i, (cls, _) in enumerate(ERROR_TABLE):
        for later, _ in ERROR_TABLE[i + 1:]:
            assert not issubclass(later, cls), f"{later.__name__} would be shadowed by {cls.__name__}'s row"


@pytest.mark.parametrize(("error", "http", "openai_type", "code", "tgi", "grpc_code"), [
    (InvalidRequest("bad"), 400, "invalid_request_error", None, (422, "validation"), S.INVALID_ARGUMENT),
    (ContextLengthExceeded("long"), 400, "invalid_request_error", "context_length_exceeded", (422, "validation"),
     S.INVALID_ARGUMENT),
    (ModelNotFound("who"), 404, "invalid_request_error", "model_not_found", (422, "validation"), S.NOT_FOUND),
    (Overloaded("busy"), 429, "server_overloaded", None, (429, "overloaded"), S.RESOURCE_EXHAUSTED),
    (Unavailable("none"), 503, "service_unavailable", "model_unavailable", (429, "overloaded"), S.UNAVAILABLE),
    (EngineDead("dead"), 503, "service_unavailable", "engine_dead", (424, "generation"), S.UNAVAILABLE),
    (RequestFailed("alone"), 500, "internal_error", "request_failed", (424, "generation"), S.INTERNAL),
    (UpstreamError("far"), 502, "upstream_error", None, (424, "generation"), S.UNAVAILABLE),
    (StreamInterrupted("cut"), 502, "upstream_error", "stream_interrupted", (424, "generation"), S.UNAVAILABLE),
    (Unauthenticated("who"), 401, "invalid_request_error", "invalid_api_key", (401, "authentication"),
     S.UNAUTHENTICATED),
    (PermissionDenied("no"), 403, "invalid_request_error", "model_not_allowed", (403, "authorization"),
     S.PERMISSION_DENIED),
    (RateLimited("slow down"), 429, "rate_limit_error", "rate_limit_exceeded", (429, "overloaded"),
     S.RESOURCE_EXHAUSTED),
    (QueueFull("full"), 429, "server_overloaded", "queue_full", (429, "overloaded"), S.RESOURCE_EXHAUSTED),
    (Draining("bye"), 503, "service_unavailable", "draining", (429, "overloaded"), S.UNAVAILABLE),
    (DeadlineExceeded("late"), 504, "timeout_error", "deadline_exceeded", (424, "generation"),
     S.DEADLINE_EXCEEDED),
    (TurnoutError("other"), 500, "internal_error", None, (424, "generation"), S.INTERNAL),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None)
def test_each_class_has_one_meaning_on_every_protocol(error, http, openai_type, code, tgi, grpc_code):
    assert http_status(error) == http
    body = openai_body(error)["error"]
    assert (body["type"], body["code"], body["message"]) == (openai_type, code, error.message)
    status, tgi_body = tgi_error_body(error)
    assert (status, tgi_body["error_type"]) == tgi and tgi_body["error"].endswith(error.message)
    assert grpc_status(error) == grpc_code


def test_an_errors_own_code_wins_over_its_classes():
    assert openai_body(InvalidRequest("upstream said so", code="invalid_value"))["error"]["code"] == "invalid_value"


def test_retryable_errors_say_when_and_a_401_says_how():
    assert error_headers(QueueFull("full", retry_after=2.2)) == {"retry-after": "3"}
    assert error_headers(RateLimited("slow", retry_after=0.1)) == {"retry-after": "1"}
    assert error_headers(Unauthenticated("who"))["www-authenticate"].startswith("Bearer")
    assert error_headers(InvalidRequest("bad")) == {}
