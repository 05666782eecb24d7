"""POST /v1/embeddings (OpenAI's shape): the same admission, routing and telemetry as the other routes, then
`Backend.embed` (backends/embeddings.py), which refuses with a 400 on a backend that has no embeddings."""

from __future__ import annotations

import base64
import struct

from starlette.requests import Request
from starlette.responses import JSONResponse

from backends.embeddings import MAX_INPUTS, EmbeddingRequest
from backends.errors import InvalidRequest
from backends.types import SamplingParams
from server.http import telemetry_middleware
from server.http.requests import client_read_timeout, parse_body, request_id, resolve_model
from server.http.streams import until_disconnected
from server.http.telemetry_middleware import record_of
from server.openai import embedding_schemas
from server.rate_limits import estimate_tokens

_ONE_SEQUENCE = SamplingParams(max_tokens=1)
"""How admission counts an embedding request: as one sequence (it starts none; MAX_INPUTS bounds its size)."""


def inputs_of(body: embedding_schemas.EmbeddingRequest) -> list[str | list[int]]:
    """`input` as a list of inputs, or InvalidRequest naming `input` (OpenAI refuses these too)."""
    value = body.input
    if isinstance(value, str) or (value and all(isinstance(t, int) for t in value)):
        inputs = [value]
    else:
        inputs = list(value)
    if not inputs:
        raise InvalidRequest("input must not be empty", param="input")
    if len(inputs) > MAX_INPUTS:
        raise InvalidRequest(f"input has {len(inputs)} items; at most {MAX_INPUTS} may be embedded in one request",
                             param="input")
    for i, item in enumerate(inputs):
        if not item:
            raise InvalidRequest(f"input[{i}] is empty: there is nothing to embed", param="input")
    return inputs


def encoded(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


async def create_embedding(request: Request):
    body = await parse_body(request, embedding_schemas.EmbeddingRequest)
    backend = resolve_model(request, body.model)
    inputs = inputs_of(body)
    rid = request_id(request, "embd")
    estimate = estimate_tokens([i for i in inputs if isinstance(i, str)], [i for i in inputs if isinstance(i, list)])
    admitted = request.app.state.router.admit(record_of(request), 1, _ONE_SEQUENCE, estimate,
                                              patience=client_read_timeout(request))
    embedding_request = EmbeddingRequest(rid, body.model, inputs, body.dimensions, tenant=admitted.tenant,
                                         deadline=admitted.deadline, patience=admitted.patience)
    result = await until_disconnected(request, telemetry_middleware.embedded(request, backend, embedding_request))
    data = [{"object": "embedding", "index": i, "embedding": encoded(vector, body.encoding_format)}
            for i, vector in enumerate(result.embeddings)]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return JSONResponse({"object": "list", "data": data, "model": body.model, "usage": usage},
                        headers={"x-request-id": rid})
