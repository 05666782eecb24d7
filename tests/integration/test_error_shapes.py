"""Routing's own errors in the shape of the API a path belongs to: a wrong method on TGI's routes is TGI's
`{"error", "error_type"}`, on the OpenAI routes OpenAI's `{"error": {...}}`, both with the Allow header
HTTP requires for 405; an unknown path is OpenAI's 404. A gateway with an idle backend: routing needs no
model."""

import httpx
import pytest

from backends.types import ModelInfo
from tests.inert_backend import InertBackend
from tests.server_thread import ServerThread


class Idle(InertBackend):
    info = ModelInfo(name="idle", max_model_len=64)

    async def generate(self, request):
        raise AssertionError("routing errors never reach a backend")
        yield


@pytest.fixture(scope="module")
def gateway():
    srv = ServerThread({"idle": Idle()}).start()
    yield srv
    srv.stop()


def allowed(response: httpx.Response) -> set[str]:
    return allowed_methods(response.headers["allow"])


def allowed_methods(allow: str) -> set[str]:
    return {method.strip() for method in allow.split(",")}  # Starlette lists them in no fixed order


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/generate", "POST"),
    ("GET", "/generate_stream", "POST"),
    ("PUT", "/", "POST"),
    ("GET", "/", "POST"),
    ("POST", "/info", "GET, HEAD"),
])
def test_a_wrong_method_on_a_tgi_route_is_a_405_in_tgi_shape(gateway, method, path, allow):
    r = httpx.request(method, gateway.url + path, timeout=10)
    assert r.status_code == 405 and allowed(r) == allowed_methods(allow)
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "Method Not Allowed", "error_type": "method_not_allowed"}


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/completions", "POST"),
    ("GET", "/v1/chat/completions", "POST"),
    ("DELETE", "/v1/models", "GET, HEAD"),
    ("GET", "/tokenize", "POST"),
])
def test_a_wrong_method_on_an_openai_route_is_a_405_in_openai_shape(gateway, method, path, allow):
    r = httpx.request(method, gateway.url + path, timeout=10)
    assert r.status_code == 405 and allowed(r) == allowed_methods(allow)
    assert r.json() == {"error": {"message": "Method Not Allowed", "type": "invalid_request_error", "param": None,
                                  "code": None}}


@pytest.mark.parametrize("path", ["/nothing", "/generate/extra", "/v1/nothing"])
def test_an_unknown_path_is_openais_404(gateway, path):
    r = httpx.get(gateway.url + path, timeout=10)
    assert r.status_code == 404
    assert r.json() == {"error": {"message": "Not Found", "type": "not_found_error", "param": None, "code": None}}
