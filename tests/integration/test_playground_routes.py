"""The playground's files as HTTP serves them, without a browser (tests/e2e/test_playground.py drives the
page): content types, caching (ETag, no-cache, 304), the page's own security headers, every file the page
names is served and nothing outside the table is; GET / sends browsers there while TGI's POST / still
generates and other GET / clients still get TGI's 405; with API keys the page stays open, the API does not."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.testclient import TestClient

from server.app import build_app
from server.keys import ApiKey, KeyRing, hash_key
from server.playground.routes import FILES
from server.router import Router
from tests import raw_http
from tests.integration.test_openapi_keys import KEY, Silent
from tests.server_thread import ServerThread

TYPES = {"html": "text/html; charset=utf-8", "css": "text/css; charset=utf-8",
         "js": "text/javascript; charset=utf-8"}


def test_the_page_and_each_file_have_their_type_and_caching_headers(server):
    for path in ["/playground", *(f"/playground/{name}" for name in FILES if name != "index.html")]:
        response = httpx.get(server.url + path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == TYPES[(path if "." in path else ".html").rsplit(".", 1)[1]]
        assert response.headers["cache-control"] == "no-cache"
        assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["etag"])
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "connect-src 'self'" in response.headers["content-security-policy"]


def test_a_file_the_browser_has_is_a_304_without_a_body(server):
    first = httpx.get(server.url + "/playground/playground.js")
    again = httpx.get(server.url + "/playground/playground.js", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == first.headers["etag"]
    weak = httpx.get(server.url + "/playground/playground.js", headers={"if-none-match": f'"x", W/{first.headers["etag"]}'})
    assert weak.status_code == 304
    stale = httpx.get(server.url + "/playground/playground.js", headers={"if-none-match": '"0"'})
    assert stale.status_code == 200 and stale.content == first.content


def test_head_has_the_headers_and_no_body(server):
    response = httpx.head(server.url + "/playground")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-type"] == TYPES["html"]


def referenced(text: str) -> set[str]:
    """Files a page or module names: href/src attributes and ES module imports."""
    return set(re.findall(r'(?:href|src)="([^"]+)"', text)) | set(re.findall(r'from "([^"]+)"', text))


def test_every_file_the_page_names_is_served_from_the_package_and_nothing_from_elsewhere(server):
    names = referenced(FILES["index.html"].body.decode()) - {"data:,"}  # the empty icon: no request at all
    for name, file in FILES.items():
        if name.endswith(".js"):
            names |= {"playground/" + ref.removeprefix("./") for ref in referenced(file.body.decode())}
    assert names, "the page names its files"
    for name in names:
        assert not re.match(r"^[a-z]+:|^//", name), f"{name}: the page loads nothing from another address"
        assert httpx.get(server.url + "/" + name).status_code == 200, name
    served_js = {name for name in FILES if name.endswith(".js")}
    assert {"playground/" + name for name in served_js} <= names, "a module nothing imports"


@pytest.mark.parametrize("path", ["/playground/nope.js", "/playground/index.html", "/playground/static/sse.js",
                                  "/playground/__init__.py", "/playground/routes.py"])
def test_a_name_outside_the_table_is_a_404_in_json(server, path):
    response = httpx.get(server.url + path)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("target", ["/playground/../server/app.py", "/playground/%2e%2e/server/app.py",
                                    "/playground/%2e%2e%2fserver%2fapp.py", "/playground/..%2f..%2fpyproject.toml",
                                    "/playground/%2E%2E/routes.py", "/playground/static/../routes.py"])
def test_a_traversing_path_sent_as_is_is_a_404(server, target):
    """Raw, as a hostile client sends it: httpx would resolve the dots before sending."""
    with raw_http.connect(server.port) as sock:
        sock.sendall(raw_http.head("GET", target, {"Connection": "close"}))
        response = raw_http.read_response(sock)
    assert response.status == 404, (target, response.body[:200])
    assert response.json()["error"]["type"] == "not_found_error"


def test_the_slash_form_goes_to_the_page(server):
    response = httpx.get(server.url + "/playground/")
    assert response.status_code == 308 and response.headers["location"] == "/playground"


def test_a_browser_at_the_root_goes_to_the_playground(server):
    browser = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    response = httpx.get(server.url + "/", headers=browser)
    assert response.status_code == 307 and response.headers["location"] == "/playground"


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_any_other_get_of_the_root_is_tgis_405(server, accept):
    response = httpx.get(server.url + "/", headers={"accept": accept} if accept else {})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error_type"] == "method_not_allowed"


def test_tgis_post_to_the_root_still_generates(server):
    response = httpx.post(server.url + "/", json={"inputs": "The for statement",
                                                  "parameters": {"max_new_tokens": 3}},
                          headers={"accept": "text/html"}, timeout=60)
    assert response.status_code == 200
    assert isinstance(response.json()[0]["generated_text"], str)


@pytest.fixture(scope="module")
def keyed():
    router = Router({"silent": Silent()}, keys=KeyRing([ApiKey(name="page", hash=hash_key(KEY))]))
    srv = ServerThread.for_router(router).start()
    yield srv
    srv.stop()


def test_with_api_keys_the_page_is_open_and_the_api_is_not(keyed):
    assert httpx.get(keyed.url + "/playground").status_code == 200
    assert httpx.get(keyed.url + "/playground/playground.js").status_code == 200
    assert httpx.get(keyed.url + "/", headers={"accept": "text/html"}).status_code == 307
    assert httpx.get(keyed.url + "/v1/models").status_code == 401
    assert httpx.post(keyed.url + "/", json={"inputs": "x"}).status_code == 401
    with_key = httpx.get(keyed.url + "/v1/models", headers={"authorization": f"Bearer {KEY}"})
    assert with_key.status_code == 200 and with_key.json()["data"][0]["id"] == "silent"


def test_a_server_told_no_playground_serves_none():
    client = TestClient(build_app(Router({"silent": Silent()}), playground=False))  # no lifespan: routing only
    assert client.get("/playground").status_code == 404
    assert client.get("/", headers={"accept": "text/html"}).status_code == 405
