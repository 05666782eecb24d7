"""POST /v1/chat/completions."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from backends.types import GenerateRequest, Usage
from server.http import sse, telemetry_middleware
from server.http.requests import client_read_timeout, parse_body, request_id, resolve_model, session_id
from server.http.streams import merge, until_disconnected
from server.http.telemetry_middleware import record_of
from server.openai.choices import collect, usage_dict, with_usage
from server.openai.convert import chat_sampling_params, render_chat
from server.openai.logprobs import chat_logprobs
from server.openai.schemas import ChatCompletionRequest
from server.rate_limits import estimate_tokens


async def create_chat_completion(request: Request):
    body = await parse_body(request, ChatCompletionRequest)
    backend = resolve_model(request, body.model)
    params = chat_sampling_params(body)
    admitted = request.app.state.router.admit(record_of(request), 1, params,
                                              estimate_tokens([m.text() for m in body.messages]),
                                              patience=client_read_timeout(request))
    rid = request_id(request, "chatcmpl")
    if backend.tokenizing is None:  # a remote backend: its server applies the chat template
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        generate_request = GenerateRequest(rid, body.model, params, messages=messages, buffered=not body.stream,
                                           tenant=admitted.tenant, deadline=admitted.deadline,
                                           patience=admitted.patience, session=session_id(request))
    else:
        prompt_ids = await render_chat(backend.tokenizing, body.messages, body.add_generation_prompt)
        generate_request = GenerateRequest(rid, body.model, params, prompt_token_ids=prompt_ids,
                                           buffered=not body.stream, tenant=admitted.tenant,
                                           deadline=admitted.deadline, patience=admitted.patience,
                                           session=session_id(request))
    merged = merge([telemetry_middleware.observed(request, backend, generate_request)])
    base = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": body.model}

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse.response(_events(merged, base, include_usage, body.return_token_ids))

    choices, usage = await until_disconnected(request, collect(merged, params.n))
    base["choices"] = [
        {
            "index": c.index,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": None if c.logprobs is None else chat_logprobs(c.logprobs),
            "finish_reason": c.finish_reason,
            **({"token_ids": c.token_ids} if body.return_token_ids else {}),
        }
        for c in choices
    ]
    base["usage"] = usage_dict(usage)
    return JSONResponse(base, headers={"x-request-id": rid})


async def _events(merged, base: dict, include_usage: bool, token_ids: bool):
    base = {**base, "object": "chat.completion.chunk"}
    encoder = sse.ChunkEncoder(base, {"usage": None} if include_usage else None)
    usage = Usage()
    started: set[int] = set()
    async for _, delta in merged:
        if delta.index not in started:
            started.add(delta.index)
            first = {"index": delta.index, "delta": {"role": "assistant", "content": ""},
                     "logprobs": None, "finish_reason": None}
            yield encoder.chunk(first)
        usage = with_usage(usage, delta)
        choice = {
            "index": delta.index,
            "delta": {"content": delta.text} if delta.text else {},
            "logprobs": None if delta.logprobs is None else chat_logprobs(delta.logprobs),
            "finish_reason": delta.finish_reason.value if delta.finish_reason else None,
        }
        if token_ids:
            choice["token_ids"] = delta.token_ids
        yield encoder.chunk(choice)
    if include_usage:
        yield sse.event({**base, "choices": [], "usage": usage_dict(usage)})
    yield sse.DONE
