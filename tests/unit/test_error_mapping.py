"""One module maps errors, to HTTP statuses and to gRPC codes; the two must agree class by class."""

import grpc
import pytest

from backends.errors import (
    ContextLengthExceeded,
    EngineDead,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    TurnoutError,
)
from server.errors import grpc_status


@pytest.mark.parametrize(("error", "http", "code"), [
    (InvalidRequest("bad"), 400, grpc.StatusCode.INVALID_ARGUMENT),
    (ContextLengthExceeded("long"), 400, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFound("who"), 404, grpc.StatusCode.NOT_FOUND),
    (Overloaded("busy"), 503, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (EngineDead("dead"), 500, grpc.StatusCode.UNAVAILABLE),
    (TurnoutError("other"), 500, grpc.StatusCode.INTERNAL),
])
def test_each_error_class_has_one_http_status_and_one_grpc_code(error, http, code):
    assert error.status_code == http
    assert grpc_status(error) == code
