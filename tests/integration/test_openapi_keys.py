"""A server that requires API keys publishes that in GET /openapi.json (which needs a key like any route but
the probes): the security schemes, 401 on every route that needs a key, the probes open."""

from __future__ import annotations

import httpx
import pytest

from backends.types import ModelInfo
from server.keys import ApiKey, KeyRing, hash_key
from server.router import Router
from tests.inert_backend import InertBackend
from tests.server_thread import ServerThread

KEY = "tk-openapi-secret"


class Silent(InertBackend):
    info = ModelInfo(name="silent", max_model_len=64)

    async def generate(self, request):
        return
        yield


@pytest.fixture(scope="module")
def keyed():
    router = Router({"silent": Silent()}, keys=KeyRing([ApiKey(name="docs", hash=hash_key(KEY))]))
    srv = ServerThread.for_router(router).start()
    yield srv
    srv.stop()


def test_the_document_needs_a_key_and_says_which_routes_do(keyed):
    assert httpx.get(keyed.url + "/openapi.json").status_code == 401
    doc = httpx.get(keyed.url + "/openapi.json", headers={"authorization": f"Bearer {KEY}"}).json()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert doc["security"] == [{"bearer": []}, {"apiKey": []}]
    completions = doc["paths"]["/v1/completions"]["post"]
    assert "security" not in completions and {"401", "403"} <= set(completions["responses"])
    health = doc["paths"]["/health"]["get"]
    assert health["security"] == [] and "401" not in health["responses"]
    assert httpx.get(keyed.url + "/health").status_code == 200
