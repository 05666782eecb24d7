"""POST /tokenize and POST /detokenize (vLLM-compatible shapes)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from backends.errors import InvalidRequest
from server.http.json_limits import check_body
from server.http.requests import parse_body, resolve_model, validated
from server.openai.convert import message_dicts, render_chat, tool_functions
from server.openai.schemas import DetokenizeRequest, TokenizeRequest
from server.tool_calling.plan import template_tools


def _local_tokenizer(request: Request, model: str | None):
    backend = resolve_model(request, model)
    if backend.tokenizing is None:
        raise InvalidRequest(f"model {backend.info.name!r} has no local tokenizer", param="model")
    return backend


async def tokenize(request: Request, data: dict, raw: bytes):
    """vLLM's POST /tokenize, for a body already parsed (the path is TGI's too: see server/app.py)."""
    check_body(data, raw)
    body = validated(data, TokenizeRequest)
    backend = _local_tokenizer(request, body.model)
    if body.messages is not None:
        tools = template_tools(tool_functions(body.tools))
        tokens = await render_chat(backend.tokenizing, message_dicts(body.messages), body.add_generation_prompt,
                                   tools)
    else:
        tokens = await backend.tokenizing.encode(body.prompt, add_special_tokens=body.add_special_tokens)
    return JSONResponse({"tokens": tokens, "count": len(tokens), "max_model_len": backend.info.max_model_len})


async def detokenize(request: Request):
    body = await parse_body(request, DetokenizeRequest)
    tokenizer = _local_tokenizer(request, body.model).tokenizer
    vocab = len(tokenizer)
    bad = [t for t in body.tokens if not 0 <= t < vocab]
    if bad:
        raise InvalidRequest(f"token id {bad[0]} is outside the vocabulary [0, {vocab})", param="tokens")
    return JSONResponse({"prompt": tokenizer.decode(body.tokens)})
