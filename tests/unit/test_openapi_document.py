"""The published OpenAPI document (server/openapi.py), without a server: it covers exactly the app's routes,
it is valid OpenAPI 3.1 with valid JSON Schemas, its references resolve, and it describes the server as
configured (API keys or not). tests/integration/test_openapi_schemathesis.py checks it against the live
server's answers."""

import json

import pytest
from jsonschema import Draft202012Validator
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from server.app import ROUTES, build_app
from server.openapi import Auth, document
from server.playground.routes import ROUTES as PAGE_ROUTES
from server.router import Router
from tests.integration.test_openapi_keys import Silent


@pytest.fixture(scope="module", params=[Auth(), Auth(keys_required=True)], ids=["open", "keys"])
def doc(request) -> dict:
    return json.loads(json.dumps(document(request.param)))  # what a client parses


def operations(doc: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def test_every_route_is_described_and_nothing_else():
    routes = {(method, route.path) for route in ROUTES for method in route.methods if method != "HEAD"}
    assert operations(document()) == routes


def test_the_app_serves_nothing_undescribed_but_the_playground():
    """The page and GET / for browsers are left out on purpose (server/openapi.py says why)."""
    app = build_app(Router({"silent": Silent()}))
    served = {(method, route.path) for route in app.routes for method in route.methods if method != "HEAD"}
    pages = {(method, route.path) for route in PAGE_ROUTES for method in route.methods if method != "HEAD"}
    assert served - operations(document()) == pages


def test_is_valid_openapi_31_with_valid_json_schemas(doc):
    errors = [str(error) for error in OPENAPI_31_VALIDATOR.iter_errors(doc)]
    assert not errors, errors[:3]
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(doc: dict, ref: str):
    target = doc
    for part in ref.removeprefix("#/").split("/"):
        assert part in target, ref
        target = target[part]
    return target


def test_every_reference_resolves(doc):
    for ref in set(refs(doc)):
        resolve(doc, ref)


def test_response_bodies_refuse_keys_they_do_not_name(doc):
    """What keeps the response models honest: a key a handler adds without adding it to its model fails the
    schemathesis run's response_schema_conformance."""
    responses = [response for item in doc["paths"].values() for op in item.values()
                 for response in op["responses"].values()]
    seen, todo = set(), {ref for ref in refs(responses) if ref.startswith("#/components/schemas/")}
    while todo:
        ref = todo.pop()
        seen.add(ref)
        todo |= {r for r in refs(resolve(doc, ref)) if r.startswith("#/components/schemas/")} - seen
    objects = {ref.rsplit("/", 1)[1]: resolve(doc, ref) for ref in seen}
    objects = {name: schema for name, schema in objects.items() if schema.get("type") == "object"}
    assert {"Completion", "ChatCompletionChunk", "TgiStreamResponse", "TgiInfo", "Status"} <= set(objects)
    assert [name for name, schema in objects.items() if schema.get("additionalProperties") is not False] == []


def test_streams_describe_each_event_and_name_the_chunk():
    chat = document()["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    data = chat["text/event-stream"]["schema"]["properties"]["data"]
    done, chunk = data["anyOf"]
    assert done == {"const": "[DONE]"}
    assert chunk["contentMediaType"] == "application/json"
    assert {"$ref": "#/components/schemas/ChatCompletionChunk"} in chunk["contentSchema"]["anyOf"]


def test_errors_in_each_protocols_shape_with_its_statuses():
    paths = document()["paths"]
    openai = paths["/v1/completions"]["post"]["responses"]
    tgi = paths["/generate"]["post"]["responses"]
    assert {"400", "404", "429", "500", "503"} <= set(openai) and not {"401", "403", "422"} & set(openai)
    assert {"422", "424", "429"} <= set(tgi) and not {"400", "500"} & set(tgi)
    assert openai["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert tgi["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TgiErrorResponse"}
    tokenize = paths["/tokenize"]["post"]["responses"]
    assert {"400", "422"} <= set(tokenize)  # one path, both shapes


def test_with_api_keys_every_route_but_the_probes_needs_one():
    doc = document(Auth(keys_required=True))
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    for (method, path) in operations(doc):
        op = doc["paths"][path][method.lower()]
        probe = path in {"/health", "/ready", "/metrics"}
        assert (op.get("security") == []) == probe, path
        assert ("401" in op["responses"]) != probe, path
    probes_too = document(Auth(keys_required=True, keys_for_probes=True))
    assert "401" in probes_too["paths"]["/health"]["get"]["responses"]
