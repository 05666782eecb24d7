"""CORS: off unless origins are configured (`--allowed-origins`). Off, a browser's preflight gets no
permission and a page's cross-origin POST without one (text/plain) is refused before any work; on, the
configured origins get it, others do not. A gateway with a one-token backend."""

import json

import httpx
import pytest

from backends.types import FinishReason, ModelInfo, OutputDelta
from tests.inert_backend import InertBackend
from tests.server_thread import ServerThread

ALLOWED = "http://app.example"


class OneToken(InertBackend):
    info = ModelInfo(name="one-token", max_model_len=64)

    async def generate(self, request):
        yield OutputDelta(token_ids=[1], text="a", finish_reason=FinishReason.LENGTH)


@pytest.fixture(scope="module")
def closed():
    srv = ServerThread({"one-token": OneToken()}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def opened():
    srv = ServerThread({"one-token": OneToken()}, allowed_origins=(ALLOWED, "http://other.example")).start()
    yield srv
    srv.stop()


def preflight(server: ServerThread, origin: str) -> httpx.Response:
    return httpx.options(server.base_url + "/chat/completions", headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"})


COMPLETION = json.dumps({"model": "one-token", "prompt": "x", "max_tokens": 1})


def test_by_default_a_preflight_gets_no_permission(closed):
    r = preflight(closed, ALLOWED)
    assert r.status_code == 405
    assert not any(name.startswith("access-control-") for name in r.headers)


def test_by_default_a_pages_post_that_needs_no_preflight_is_refused_before_any_work(closed):
    """What `fetch(url, {method: "POST", body: "..."})` sends from any page: text/plain, no preflight."""
    r = httpx.post(closed.base_url + "/completions", content=COMPLETION,
                   headers={"origin": "http://evil.example", "content-type": "text/plain;charset=UTF-8"})
    assert r.status_code == 415 and "access-control-allow-origin" not in r.headers


def test_a_configured_origins_preflight_is_allowed(opened):
    r = preflight(opened, ALLOWED)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "authorization, content-type"


def test_another_origins_preflight_is_not(opened):
    r = preflight(opened, "http://evil.example")
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers


def test_a_configured_origins_request_and_its_refusals_carry_the_permission(opened):
    r = httpx.post(opened.base_url + "/completions", content=COMPLETION,
                   headers={"origin": ALLOWED, "content-type": "application/json"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in r.headers["access-control-expose-headers"]
    refused = httpx.post(opened.base_url + "/completions", content=COMPLETION,
                         headers={"origin": ALLOWED, "content-type": "text/plain"})
    assert refused.status_code == 415 and refused.headers["access-control-allow-origin"] == ALLOWED
