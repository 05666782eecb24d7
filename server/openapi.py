"""The OpenAPI 3.1 document served at GET /openapi.json: every route, its request body and every response
it gives, success and error, generated from the pydantic models (request schemas in server/*/schemas.py,
response shapes in server/*/responses.py) and from `ERROR_TABLE`, never written by hand.

Streams are `text/event-stream` responses whose `schema` describes one event, as OpenAPI 3.2's `itemSchema`
does (and schemathesis reads 3.1's): its `data` is JSON (`contentSchema`: the chunk, or the error that ends
a stream failing after its start), or OpenAI's closing `[DONE]`. `build_app` builds the document once, for
the server as configured (API keys or not); the route sends the same bytes every time.

Not described, on purpose: the playground (server/playground/routes.py), a web page and its files for
people, not an API for clients, and GET /, which sends a browser there (to any other client it is TGI's 405,
as the document's POST-only `/` says).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from server.errors import ERROR_TABLE
from server.openai import embedding_schemas as oai_embed
from server.openai import responses as oai
from server.openai import schemas as oai_req
from server.response_model import ResponseModel
from server.tgi import responses as tgi
from server.tgi import schemas as tgi_req

OPENAI_TAG, TGI_TAG, OPS_TAG = "OpenAI", "TGI", "Operations"
TGI_PREFIX = "Tgi"
"""TGI's component names are prefixed: both APIs have a TokenizeRequest, an ErrorResponse, ..."""
UNAUTHENTICATED, FORBIDDEN = 401, 403
"""Answered only by a server that requires API keys (server/http/auth_middleware.py)."""


class Status(ResponseModel):
    """GET /health and GET /ready while all is well."""

    status: Literal["ok", "ready"]


def _meanings(status_of) -> dict[int, str]:
    """Each status of `ERROR_TABLE` (by `status_of(row)`) -> what its error classes mean."""
    meanings: dict[int, list[str]] = {}
    for cls, row in ERROR_TABLE:
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        meanings.setdefault(status_of(row), []).append(f"`{cls.__name__}`: {doc}")
    return {status: " ".join(lines) for status, lines in meanings.items()}


OPENAI_MEANINGS = _meanings(lambda row: row.http_status)
TGI_MEANINGS = _meanings(lambda row: row.tgi_status)
ROUTING = {405: "The path does not take this method; the `Allow` header lists those it does."}
BODY_LIMITS = {408: "The request body did not arrive within the server's body timeout.",
               413: "The request body is larger than the server accepts (`--max-body-bytes`).",
               415: "The request's Content-Type is not application/json."}
"""What server/http/body_guard.py answers, in the route's shape, before a route with a body runs."""
HTTP_LAYER = ("Any request may also be refused by the HTTP layer before any route sees it, in OpenAI's error "
              "shape, and the connection closed: 400 (not HTTP), 408 (a request head too slow), 431 (a request "
              "head too large), 503 (at the connection limit).")


@dataclass(frozen=True)
class Errors:
    """One error body shape and the statuses a route answers with it (status -> what it means)."""

    model: type[BaseModel]
    statuses: dict[int, str]


OPENAI_ERRORS = Errors(oai.ErrorResponse, {**OPENAI_MEANINGS, **ROUTING, **BODY_LIMITS})
TGI_ERRORS = Errors(tgi.ErrorResponse, {**TGI_MEANINGS, **ROUTING, **BODY_LIMITS})
TGI_TOKENIZE_ERRORS = Errors(tgi.ErrorResponse, TGI_MEANINGS)
"""POST /tokenize with `inputs`: what TGI's handler answers (routing's, the body's and the key's are OpenAI's)."""
METHOD_ONLY = Errors(oai.ErrorResponse, ROUTING)
NOT_SERVING = Errors(oai.ErrorResponse, {**ROUTING, 503: "Not serving: the message says why."})


@dataclass(frozen=True)
class Stream:
    """A `text/event-stream` response: events of `events`, or `errors` for a failure after the start."""

    events: type[BaseModel]
    errors: type[BaseModel]
    done: bool
    """The stream ends with `data: [DONE]` (OpenAI's)."""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    body: tuple[type[BaseModel], ...] = ()
    """The request body's shapes (any of them); none: no body."""
    ok: tuple[type[BaseModel] | Stream | str, ...] = ()
    """The 200 response's shapes: JSON models, a stream, or a media type whose body is not modelled."""
    errors: tuple[Errors, ...] = (METHOD_ONLY,)
    ok_headers: dict[str, dict] = field(default_factory=dict)
    probe: bool = False
    """Open to probes and scrapers without an API key, unless the server is told otherwise."""


_COUNT = {"$ref": "#/components/headers/TokenCount"}
OPERATIONS = (
    Operation("post", "/v1/completions", "createCompletion", "Complete prompts (OpenAI); `stream: true` streams.",
              OPENAI_TAG, (oai_req.CompletionRequest,),
              (oai.Completion, Stream(oai.CompletionChunk, oai.ErrorResponse, done=True)), (OPENAI_ERRORS,)),
    Operation("post", "/v1/chat/completions", "createChatCompletion",
              "Answer a conversation (OpenAI); `stream: true` streams.", OPENAI_TAG,
              (oai_req.ChatCompletionRequest,),
              (oai.ChatCompletion, Stream(oai.ChatCompletionChunk, oai.ErrorResponse, done=True)), (OPENAI_ERRORS,)),
    Operation("post", "/v1/embeddings", "createEmbedding",
              "Embed texts or token ids (OpenAI): one L2-normalised vector per input; a 400 from a backend that "
              "serves none.", OPENAI_TAG, (oai_embed.EmbeddingRequest,), (oai_embed.EmbeddingList,), (OPENAI_ERRORS,)),
    Operation("get", "/v1/models", "listModels", "List the models, aliases and adapters served.", OPENAI_TAG,
              ok=(oai.ModelList,)),
    Operation("post", "/tokenize", "tokenize",
              "Tokenize a prompt or a conversation: vLLM's shape, or TGI's when the body has `inputs` (then its "
              "answer and its errors are TGI's too).", OPENAI_TAG, (oai_req.TokenizeRequest, tgi_req.TokenizeRequest),
              (oai.TokenizeResponse, tgi.TokenizeResponse), (OPENAI_ERRORS, TGI_TOKENIZE_ERRORS)),
    Operation("post", "/detokenize", "detokenize", "Turn token ids back into text (vLLM's shape).", OPENAI_TAG,
              (oai_req.DetokenizeRequest,), (oai.DetokenizeResponse,), (OPENAI_ERRORS,)),
    Operation("post", "/", "tgiCompatGenerate", "Generate (TGI): a list with one answer, or the stream when "
              "`stream` is true.", TGI_TAG, (tgi_req.CompatGenerateRequest,),
              (tgi.CompatGenerateResponse, Stream(tgi.StreamResponse, tgi.ErrorResponse, done=False)), (TGI_ERRORS,)),
    Operation("post", "/generate", "tgiGenerate", "Generate (TGI).", TGI_TAG, (tgi_req.GenerateRequest,),
              (tgi.GenerateResponse,), (TGI_ERRORS,), {"x-prompt-tokens": _COUNT, "x-generated-tokens": _COUNT}),
    Operation("post", "/generate_stream", "tgiGenerateStream", "Generate (TGI), one event per token.", TGI_TAG,
              (tgi_req.GenerateRequest,), (Stream(tgi.StreamResponse, tgi.ErrorResponse, done=False),),
              (TGI_ERRORS,)),
    Operation("get", "/info", "tgiInfo", "The default model and the server's limits (TGI).", TGI_TAG,
              ok=(tgi.Info,), errors=(TGI_ERRORS,)),
    Operation("get", "/health", "health", "Liveness: 503 once an engine has died and only a restart helps.",
              OPS_TAG, ok=(Status,), errors=(NOT_SERVING,), probe=True),
    Operation("get", "/ready", "ready", "Readiness: 200 while every model has a healthy replica.", OPS_TAG,
              ok=(Status,), errors=(NOT_SERVING,), probe=True),
    Operation("get", "/metrics", "metrics", "Prometheus metrics (text exposition format).", OPS_TAG,
              ok=("text/plain",), probe=True),
    Operation("get", "/openapi.json", "openapi", "This document.", OPS_TAG, ok=("application/json",)),
)

HEADERS = {
    "RequestId": {"description": "The request's id: the client's X-Request-Id when it sent one, else a fresh one.",
                  "schema": {"type": "string"}, "required": True},
    "TokenCount": {"schema": {"type": "integer", "minimum": 0}, "required": True},
    "RetryAfter": {"description": "Seconds after which a retry may succeed, when the server can tell.",
                   "schema": {"type": "integer", "minimum": 1}},
    "WwwAuthenticate": {"schema": {"type": "string"}, "required": True},
}
REQUEST_ID = {"x-request-id": {"$ref": "#/components/headers/RequestId"}}
ERROR_HEADERS = {429: {"retry-after": {"$ref": "#/components/headers/RetryAfter"}},
                 503: {"retry-after": {"$ref": "#/components/headers/RetryAfter"}},
                 UNAUTHENTICATED: {"www-authenticate": {"$ref": "#/components/headers/WwwAuthenticate"}}}
SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer KEY`"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}


@dataclass(frozen=True)
class Auth:
    """What the server asks of a request's API key (`build_app`'s router and flags)."""

    keys_required: bool = False
    keys_for_probes: bool = False

    def needs_key(self, op: Operation) -> bool:
        return self.keys_required and (self.keys_for_probes or not op.probe)


def document(auth: Auth = Auth()) -> dict:
    """The whole document, as a dict."""
    refs, schemas = _components()
    paths: dict[str, dict] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs, auth)
    components: dict[str, Any] = {"schemas": schemas, "headers": HEADERS}
    out: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "turnout", "version": _version(),
                 "description": f"OpenAI's and TGI's HTTP APIs, and the routes orchestrators call. {HTTP_LAYER}"},
        "tags": [{"name": OPENAI_TAG}, {"name": TGI_TAG}, {"name": OPS_TAG}],
        "paths": paths,
        "components": components,
    }
    if auth.keys_required:
        components["securitySchemes"] = SECURITY_SCHEMES
        out["security"] = [{name: []} for name in SECURITY_SCHEMES]
    return out


def encoded(auth: Auth = Auth()) -> bytes:
    return json.dumps(document(auth), separators=(",", ":")).encode()


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: the document `build_app` built."""
    return Response(request.app.state.openapi, media_type="application/json")


def _models() -> dict[str, list[type[BaseModel]]]:
    """Every model the operations name, by component-name prefix."""
    groups: dict[str, list[type[BaseModel]]] = {"": [], TGI_PREFIX: []}
    for op in OPERATIONS:
        shapes = [*op.body, *(errors.model for errors in op.errors)]
        for shape in op.ok:
            shapes += [shape.events, shape.errors] if isinstance(shape, Stream) else [shape]
        for model in (shape for shape in shapes if isinstance(shape, type)):
            group = groups[TGI_PREFIX if model.__module__.startswith("server.tgi.") else ""]
            if model not in group:
                group.append(model)
    return groups


def _components() -> tuple[dict[type[BaseModel], dict], dict[str, dict]]:
    """The $ref of each model, and every schema under components/schemas. Validation mode throughout: for
    requests it is what a client may send; response models have defaults only on keys that may be absent."""
    refs: dict[type[BaseModel], dict] = {}
    schemas: dict[str, dict] = {}
    for prefix, models in _models().items():
        mapping, top = models_json_schema([(model, "validation") for model in models],
                                          ref_template=f"#/components/schemas/{prefix}{{model}}")
        refs.update({model: schema for (model, _), schema in mapping.items()})
        for name, schema in top.get("$defs", {}).items():
            if prefix + name in schemas:
                raise ValueError(f"two models are named {prefix + name} in the OpenAPI document")
            schemas[prefix + name] = schema
    return refs, schemas


def _operation(op: Operation, refs: dict, auth: Auth) -> dict:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    if auth.keys_required and not auth.needs_key(op):
        out["security"] = []
    if op.body:
        out["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": _any([refs[model] for model in op.body])}}}
    out["responses"] = {"200": {"description": "OK", "headers": {**REQUEST_ID, **op.ok_headers},
                                "content": _ok_content(op, refs)}}
    for status, (models, meaning) in sorted(_errors(op, auth).items()):
        out["responses"][str(status)] = {
            "description": f"{HTTPStatus(status).phrase}. {meaning}",
            "headers": {**REQUEST_ID, **ERROR_HEADERS.get(status, {})},
            "content": {"application/json": {"schema": _any([refs[model] for model in models])}},
        }
    return out


def _ok_content(op: Operation, refs: dict) -> dict:
    content: dict[str, dict] = {}
    models = [refs[shape] for shape in op.ok if isinstance(shape, type)]
    if models:
        content["application/json"] = {"schema": _any(models)}
    for shape in op.ok:
        if isinstance(shape, Stream):
            content["text/event-stream"] = {"schema": _event(shape, refs)}
        elif isinstance(shape, str):
            content[shape] = {"schema": {"type": "object"} if shape == "application/json" else {"type": "string"}}
    return content


def _errors(op: Operation, auth: Auth) -> dict[int, tuple[list[type[BaseModel]], str]]:
    """Status -> (the body shapes answered with it, what it means) for the route on this server."""
    out: dict[int, tuple[list[type[BaseModel]], str]] = {}
    for errors in op.errors:
        for status, meaning in errors.statuses.items():
            models, meanings = out.get(status, ([], ""))
            out[status] = ([*models, errors.model], f"{meanings} {meaning}".strip())
    if not auth.keys_required:
        out.pop(FORBIDDEN, None)
    if auth.needs_key(op):  # in the route's own shape, before its handler runs
        out[UNAUTHENTICATED] = ([op.errors[0].model], OPENAI_MEANINGS[UNAUTHENTICATED])
    else:
        out.pop(UNAUTHENTICATED, None)
    return out


def _event(stream: Stream, refs: dict) -> dict:
    """One event of a stream: its `data` holds a JSON chunk, the error of a failed stream, or `[DONE]`."""
    data: dict[str, Any] = {"type": "string", "contentMediaType": "application/json",
                            "contentSchema": _any([refs[stream.events], refs[stream.errors]])}
    if stream.done:
        data = {"anyOf": [{"const": "[DONE]"}, data]}
    return {
        "type": "object",
        "description": f"One event: `data` is a {stream.events.__name__}, or the {stream.errors.__name__} of a "
                       "stream that fails after it started" + (", and the last is `[DONE]`." if stream.done else "."),
        "required": ["data"],
        "properties": {"data": data, "event": {"type": "string"}, "id": {"type": "string"}},
    }


def _any(schemas: list[dict]) -> dict:
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _version() -> str:
    try:
        return metadata.version("turnout")
    except metadata.PackageNotFoundError:
        return "0+unknown"
