"""TGI's native API: POST /, /generate, /generate_stream, /tokenize (TGI shape) and GET /info.

Shapes, status codes and error bodies follow text-generation-inference's router (`router/src/server.rs`),
so TGI clients (huggingface_hub's InferenceClient, text-generation) work unchanged. One turnout
difference: a request rejected before generation starts gets its 4xx status on /generate_stream too,
where TGI answers 200 and sends the error as the stream's only event; mid-stream failures are events.
"""

from __future__ import annotations

import functools
from importlib import metadata

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from backends.errors import InvalidRequest
from backends.types import GenerateRequest as CoreRequest
from server.errors import from_validation_error, tgi_error_body, tgi_error_response, to_turnout_error
from server.http import sse, telemetry_middleware
from server.http.requests import client_read_timeout, json_object, request_id, resolve_model, session_id
from server.http.streams import ClientDisconnected, merge, until_disconnected
from server.http.telemetry_middleware import record_of
from server.rate_limits import estimate_tokens
from server.tgi import schemas as schema
from server.tgi.convert import Sequence, TokenEncoder, finish_reason, sampling_params


def tgi_errors(handler):
    """Errors of TGI routes in TGI's shape; a vanished client still gets nothing."""

    @functools.wraps(handler)
    async def wrapped(request: Request):
        try:
            return await handler(request)
        except (ClientDisconnected, ClientDisconnect):  # nobody to answer
            raise
        except Exception as exc:
            return tgi_error_response(exc)

    return wrapped


async def _parse(request: Request, model: type[BaseModel]):
    data = await json_object(request)
    try:
        return model.model_validate(data, strict=True)  # as TGI's serde: "2" is not a number
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "value_error":  # one of TGI's rules: its message says it all
            raise InvalidRequest(first["msg"].removeprefix("Value error, ")) from None
        raise from_validation_error(exc) from None


async def _core_request(request: Request, body: schema.GenerateRequest, stream: bool):
    """The backend, the core request, and the prompt text TGI prepends under return_full_text."""
    backend = resolve_model(request, body.model)
    p = body.parameters
    best_of = p.best_of or 1
    if stream and best_of > 1:
        raise InvalidRequest("`best_of` != 1 is not supported when streaming tokens", param="best_of")
    if stream and p.decoder_input_details:
        raise InvalidRequest("`decoder_input_details` == true is not supported when streaming tokens",
                             param="decoder_input_details")
    params = sampling_params(p, n=best_of, stream=stream)
    admitted = request.app.state.router.admit(record_of(request), 1, params, estimate_tokens([body.inputs]),
                                              patience=client_read_timeout(request))
    prompt_ids = await _truncated(backend, body.inputs, p.truncate)
    core = CoreRequest(
        request_id=request_id(request, "tgi"),
        model=body.model or backend.info.name,
        sampling=params,
        prompt=None if prompt_ids is not None else body.inputs,
        prompt_token_ids=prompt_ids,
        adapter=p.adapter_id,
        buffered=not stream,
        tenant=admitted.tenant,
        deadline=admitted.deadline,
        patience=admitted.patience,
        session=session_id(request),
    )
    return backend, core, body.inputs if p.return_full_text else ""


async def _truncated(backend, inputs: str, truncate: int | None) -> list[int] | None:
    """TGI's `truncate`: keep the last `truncate` prompt tokens. None: the prompt goes as text.

    Only the text's tail is tokenized: no token spans more than `longest` characters, so the last
    `(truncate + 1) * longest` characters hold more than `truncate` tokens, the one the cut goes through
    among the dropped ones, however long the text is."""
    if truncate is None:
        return None
    tokenizing = backend.tokenizing
    if tokenizing is None:
        raise InvalidRequest(f"`truncate` needs a local tokenizer, which model {backend.info.name!r} has not",
                             param="truncate")
    max_input = backend.info.max_model_len - 1
    if truncate > max_input:
        raise InvalidRequest(f"`truncate` must be strictly positive and less than {max_input}. Given: {truncate}",
                             param="truncate")
    ids = await tokenizing.encode(inputs[-(truncate + 1) * tokenizing.longest_token_chars:], param="inputs")
    return ids[-truncate:] if len(ids) > truncate else None


async def _answer(request: Request, body: schema.GenerateRequest) -> tuple[dict, dict]:
    """One finished generation as TGI's `GenerateResponse` (best of `best_of` candidates), and its headers."""
    backend, core, full_text = await _core_request(request, body, stream=False)
    p, params = body.parameters, core.sampling
    encoder = TokenEncoder(backend.tokenizer)
    seqs: dict[int, Sequence] = {}
    prompt_tokens = 0

    async def collect():
        nonlocal prompt_tokens
        async for _, delta in merge([telemetry_middleware.observed(request, backend, core)]):
            seed = None if params.seed is None else params.seed + delta.index
            seqs.setdefault(delta.index, Sequence(delta.index, seed)).add(delta, encoder)
            if delta.usage is not None:
                prompt_tokens = delta.usage.prompt_tokens

    await until_disconnected(request, collect())
    ranked = sorted(seqs.values(), key=lambda s: s.cumulative_logprob, reverse=True)
    best = ranked[0]
    answer = {"generated_text": full_text + best.text}
    with_top = bool(p.top_n_tokens)
    if p.details or p.decoder_input_details:
        answer["details"] = best.details(with_top)
        if len(ranked) > 1:
            answer["details"]["best_of_sequences"] = [
                {"generated_text": full_text + s.text, **s.details(with_top)} for s in ranked[1:]
            ]
    headers = {"x-prompt-tokens": str(prompt_tokens),
               "x-generated-tokens": str(best.generated_tokens),
               "x-request-id": core.request_id}
    return answer, headers


@tgi_errors
async def generate(request: Request):
    answer, headers = await _answer(request, await _parse(request, schema.GenerateRequest))
    return JSONResponse(answer, headers=headers)


@tgi_errors
async def generate_stream(request: Request):
    return await _stream(request, await _parse(request, schema.GenerateRequest))


@tgi_errors
async def compat_generate(request: Request):
    """POST /: a list with one answer, as the Inference API did, or the stream when `stream` is true."""
    body = await _parse(request, schema.CompatGenerateRequest)
    if body.stream:
        return await _stream(request, body)
    answer, headers = await _answer(request, body)
    return JSONResponse([answer], headers=headers)


async def _stream(request: Request, body: schema.GenerateRequest):
    backend, core, full_text = await _core_request(request, body, stream=True)
    deltas = telemetry_middleware.observed(request, backend, core)
    encoder = TokenEncoder(backend.tokenizer)
    response = sse.response(_events(deltas, body.parameters, core.sampling.seed, full_text, encoder),
                            error_response=tgi_error_response, error_events=_error_events)
    response.headers["x-request-id"] = core.request_id
    return response


def _error_events(exc: Exception) -> list[bytes]:
    """A stream that fails after it began ends with TGI's error event."""
    _, body = tgi_error_body(to_turnout_error(exc))
    return [sse.event(body)]


async def _events(deltas, p: schema.GenerateParameters, seed: int | None, full_text: str, encoder: TokenEncoder):
    """TGI's `StreamResponse` per token; the last one also carries `generated_text` (and `details`)."""
    index, text, generated = 0, "", 0
    async for delta in deltas:
        tokens, tops = encoder.tokens(delta)
        text += delta.text
        generated += len(delta.token_ids)
        for i, (token, top) in enumerate(zip(tokens, tops, strict=True)):
            index += 1
            event = {"index": index, "token": token}
            if p.top_n_tokens:
                event["top_tokens"] = top
            last = delta.finish_reason is not None and i == len(tokens) - 1
            event["generated_text"] = None
            event["details"] = None
            if last:
                stop = delta.stop_reason if isinstance(delta.stop_reason, str) else ""
                event["generated_text"] = full_text + text + stop
                if p.details:
                    event["details"] = {
                        "finish_reason": finish_reason(delta),
                        "generated_tokens": generated,
                        "seed": seed,
                        "input_length": delta.usage.prompt_tokens if delta.usage else 0,
                    }
            yield sse.event(event)


@tgi_errors
async def info(request: Request):
    """TGI's `Info` for the default model (a TGI server serves exactly one)."""
    backend = resolve_model(request, None)
    max_total = backend.info.max_model_len
    return JSONResponse({
        "model_id": backend.info.name,
        "model_sha": None,
        "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": MAX_CONCURRENT_REQUESTS,
        "max_best_of": schema.MAX_BEST_OF,
        "max_stop_sequences": schema.MAX_STOP_SEQUENCES,
        "max_input_tokens": max_total - 1,
        "max_total_tokens": max_total,
        "validation_workers": 1,
        "max_client_batch_size": 1,
        "router": "turnout",
        "version": _version(),
        "sha": None,
        "docker_label": None,
    })


@tgi_errors
async def tokenize(request: Request):
    """TGI's POST /tokenize: a list of {id, text, start, stop} (character offsets into `inputs`)."""
    body = await _parse(request, schema.TokenizeRequest)
    backend = resolve_model(request, body.model)
    tokenizing = backend.tokenizing
    if tokenizing is None:
        raise InvalidRequest(f"model {backend.info.name!r} has no local tokenizer", param="model")
    tokenizing.check_size(len(body.inputs), param="inputs")
    encoding = await tokenizing.run(len(body.inputs), functools.partial(tokenizing.tokenizer,
                                                                        return_offsets_mapping=True), body.inputs)
    return JSONResponse([
        {"id": token_id, "text": body.inputs[start:stop], "start": start, "stop": stop}
        for token_id, (start, stop) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True)
    ])


# turnout does not cap concurrent requests in the gateway (the engines queue); TGI's default is reported.
MAX_CONCURRENT_REQUESTS = 128


def _version() -> str:
    try:
        return metadata.version("turnout")
    except metadata.PackageNotFoundError:
        return "0+unknown"
