"""POST /v1/completions."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from backends.types import GenerateRequest, Usage
from backends.validation import check_token_ids
from server.http import sse, telemetry_middleware
from server.http.requests import client_read_timeout, parse_body, request_id, resolve_model, session_id
from server.http.streams import merge, until_disconnected
from server.http.telemetry_middleware import record_of
from server.openai.choices import choice_index, collect, usage_dict, with_usage
from server.openai.convert import completion_sampling_params
from server.openai.logprobs import completion_logprobs
from server.openai.schemas import CompletionRequest
from server.rate_limits import estimate_tokens


async def create_completion(request: Request):
    body = await parse_body(request, CompletionRequest)
    backend = resolve_model(request, body.model)
    params = completion_sampling_params(body)
    rid = request_id(request, "cmpl")
    prompts = body.prompts()
    estimate = estimate_tokens([p for p in prompts if isinstance(p, str)], [p for p in prompts if isinstance(p, list)])
    admitted = request.app.state.router.admit(record_of(request), len(prompts), params, estimate,
                                              patience=client_read_timeout(request))
    session = session_id(request)
    generate_requests = [
        GenerateRequest(
            request_id=rid if len(prompts) == 1 else f"{rid}-{i}",
            model=body.model,
            sampling=params,
            prompt=prompt if isinstance(prompt, str) else None,
            prompt_token_ids=None if isinstance(prompt, str) else prompt,
            buffered=not body.stream,
            tenant=admitted.tenant,
            deadline=admitted.deadline,
            patience=admitted.patience,
            session=session,
        )
        for i, prompt in enumerate(prompts)
    ]
    echoes = [_echo_text(backend, p) if body.echo else "" for p in prompts]
    merged = merge([telemetry_middleware.observed(request, backend, r) for r in generate_requests])
    base = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": body.model}

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse.response(_events(merged, base, params.n, echoes, include_usage, body.return_token_ids))

    choices, usage = await until_disconnected(request, collect(merged, params.n))
    base["choices"] = []
    for c in choices:
        echo = echoes[c.index // params.n]
        logprobs = None
        if c.logprobs is not None:
            if c.prompt_logprobs is not None:  # echo: the prompt's tokens come first, from offset 0
                logprobs = completion_logprobs(c.prompt_logprobs + c.logprobs, 0)[0]
            else:
                logprobs = completion_logprobs(c.logprobs, len(echo))[0]
        choice = {"index": c.index, "text": echo + c.text, "logprobs": logprobs, "finish_reason": c.finish_reason}
        if body.return_token_ids:
            choice["token_ids"] = c.token_ids
        base["choices"].append(choice)
    base["usage"] = usage_dict(usage)
    return JSONResponse(base, headers={"x-request-id": rid})


async def _events(merged, base: dict, n: int, echoes: list[str], include_usage: bool, token_ids: bool):
    usage = Usage()
    encoder = sse.ChunkEncoder(base, {"usage": None} if include_usage else None)
    offsets: dict[int, int] = {}  # choice index -> text offset of its next token
    async for prompt_index, delta in merged:
        index = choice_index(prompt_index, n, delta)
        text = delta.text
        if index not in offsets:
            text = echoes[prompt_index] + text
            offsets[index] = len(echoes[prompt_index])
        logprobs = None
        if delta.logprobs is not None:
            items = delta.logprobs
            if delta.prompt_logprobs is not None:
                items, offsets[index] = delta.prompt_logprobs + items, 0
            logprobs, offsets[index] = completion_logprobs(items, offsets[index])
        usage = with_usage(usage, delta)
        choice = {
            "index": index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": delta.finish_reason.value if delta.finish_reason else None,
        }
        if token_ids:
            choice["token_ids"] = delta.token_ids
        yield encoder.chunk(choice)
    if include_usage:
        yield sse.event({**base, "choices": [], "usage": usage_dict(usage)})
    yield sse.DONE


def _echo_text(backend, prompt: str | list[int]) -> str:
    if isinstance(prompt, str):
        return prompt
    if backend.tokenizer is None:
        return ""
    # Decoded before the backend checks the ids: one the tokenizer cannot take (negative, or past 2**32)
    # would fail the decode with an OverflowError, a 500, instead of the request's 400.
    check_token_ids(prompt, backend.info.vocab_size or len(backend.tokenizer))
    return backend.tokenizer.decode(prompt)
