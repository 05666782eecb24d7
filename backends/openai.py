"""A remote OpenAI-compatible server (vLLM, trtllm-serve, SGLang, llama.cpp, another turnout) as a backend.

Every request is streamed from upstream (SSE over pooled keep-alive connections) and re-emitted as core
deltas, so our front ends treat it like any local engine. Closing a request's stream closes the upstream
connection, which is how an OpenAI-compatible server learns that the client left (it aborts the request).

Text prompts and token-id prompts go to `/completions`; chat requests (`GenerateRequest.messages`, sent
because this backend has no local tokenizer) go to `/chat/completions`, where the upstream applies its own
chat template. Parameters outside the OpenAI core (top_k, min_p, repetition_penalty, ...) are sent under
vLLM's names only when they differ from their defaults, so a plain OpenAI-API upstream still works for
plain requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from backends.base import Backend
from backends.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    TurnoutError,
    Unavailable,
    UpstreamError,
)
from backends.http1 import ConnectionPool, HTTPClientError
from backends.types import (
    FinishReason,
    GenerateRequest,
    ModelInfo,
    OutputDelta,
    SamplingParams,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from backends.validation import check_sampling

UNSUPPORTED = (
    ("use_beam_search", lambda p: p.use_beam_search),
    ("prompt_logprobs", lambda p: p.prompt_logprobs is not None),
)

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.ABORT,
           "content_filter": FinishReason.STOP, "tool_calls": FinishReason.STOP}


@dataclass(frozen=True)
class OpenAIUpstreamConfig:
    url: str
    """Base URL of the upstream API, including /v1 (e.g. http://127.0.0.1:8001/v1)."""
    model: str | None = None
    """The upstream's name for the model; defaults to served_model_name."""
    served_model_name: str | None = None
    """Our name for it; defaults to `model`."""
    api_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    """Longest wait for the next streamed chunk (not for the whole answer)."""
    max_connections: int = 256
    keepalive_timeout: float = 4.0
    """Idle seconds before we drop a pooled connection: below the 5 s after which uvicorn-based upstreams
    (vLLM, turnout) close idle connections, so we do not pick one they are closing."""
    max_model_len: int | None = None
    """Used when the upstream's /models does not report `max_model_len`."""
    return_token_ids: bool = True
    """Ask for token ids (vLLM and turnout honour `return_token_ids`); turn off for upstreams that reject it."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"openai backend: url must start with http:// or https://, got {self.url!r}")
        if not (self.model or self.served_model_name):
            raise ValueError("openai backend: set `model` (the upstream's model name) or `served_model_name`")
        if self.connect_timeout <= 0 or self.read_timeout <= 0 or self.keepalive_timeout <= 0:
            raise ValueError("openai backend: timeouts must be > 0")


def request_body(request: GenerateRequest, model: str, return_token_ids: bool) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) of the upstream request. Pure, so it is unit-testable without a server."""
    p = request.sampling
    body: dict[str, Any] = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    if request.messages is not None:
        path = "/chat/completions"
        body["messages"] = request.messages
        if p.max_tokens is not None:
            body["max_tokens"] = p.max_tokens
        if p.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = p.logprobs
        if p.json_schema is not None:
            body["response_format"] = (
                {"type": "json_schema", "json_schema": {"name": "schema", "schema": p.json_schema}}
                if p.json_schema else {"type": "json_object"}
            )
    else:
        path = "/completions"
        body["prompt"] = request.prompt_token_ids if request.prompt_token_ids is not None else request.prompt
        body["max_tokens"] = p.max_tokens
        if p.logprobs is not None:
            body["logprobs"] = p.logprobs
        if p.json_schema is not None:
            body["response_format"] = {"type": "json_object"} if not p.json_schema else {
                "type": "json_schema", "json_schema": {"name": "schema", "schema": p.json_schema}}
        if p.best_of is not None and p.best_of > p.n:
            raise InvalidRequest("best_of > n cannot be streamed through the openai backend", param="best_of")
    defaults = SamplingParams()
    optional = {
        "n": p.n, "temperature": p.temperature, "top_p": p.top_p, "presence_penalty": p.presence_penalty,
        "frequency_penalty": p.frequency_penalty, "seed": p.seed, "stop": list(p.stop),
        "logit_bias": {str(k): v for k, v in p.logit_bias.items()},
        # vLLM's extra parameters (turnout takes the same names)
        "top_k": p.top_k, "min_p": p.min_p, "typical_p": p.typical_p, "repetition_penalty": p.repetition_penalty,
        "min_tokens": p.min_tokens, "ignore_eos": p.ignore_eos, "stop_token_ids": list(p.stop_token_ids),
        "skip_special_tokens": p.skip_special_tokens,
    }
    for key, value in optional.items():
        if value != getattr(defaults, key):  # only what differs, so plain OpenAI upstreams take plain requests
            body[key] = value
    if return_token_ids:
        body["return_token_ids"] = True
    return path, body


def upstream_error(status: int, payload: Any) -> TurnoutError:
    """An upstream error response as our error class, keeping its message and param."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        message, param, code = str(error.get("message", "")), error.get("param"), error.get("code")
    else:
        message, param, code = str(error or payload)[:500], None, None
    message = message or f"upstream returned HTTP {status}"
    if status == 404:
        return ModelNotFound(f"upstream: {message}", param=param or "model")
    if status in (400, 413, 422):
        if code == "context_length_exceeded" or "context length" in message:
            return ContextLengthExceeded(message, param=param)
        return InvalidRequest(message, param=param)
    if status == 429:
        return Overloaded(f"upstream is overloaded: {message}")
    if status == 503:
        return Unavailable(f"upstream unavailable: {message}")
    return UpstreamError(f"upstream returned HTTP {status}: {message}")


class OpenAIUpstreamBackend(Backend):
    def __init__(self, config: OpenAIUpstreamConfig):
        self.config = config
        self._upstream_model = config.model or config.served_model_name
        self._name = config.served_model_name or config.model
        self._max_model_len = config.max_model_len or 0
        self._pool: ConnectionPool | None = None
        self._path = urlsplit(config.url).path.rstrip("/")  # e.g. /v1

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name=self._name, max_model_len=self._max_model_len, owned_by="upstream")

    def _new_pool(self) -> ConnectionPool:
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        return ConnectionPool(self.config.url, max_connections=self.config.max_connections,
                              connect_timeout=self.config.connect_timeout, read_timeout=self.config.read_timeout,
                              keepalive_timeout=self.config.keepalive_timeout, headers=headers)

    async def _get_models(self, timeout: float) -> tuple[int, Any]:
        async with asyncio.timeout(timeout):
            async with await self._pool.request("GET", f"{self._path}/models") as response:
                raw = await response.read()
        return response.status, (json.loads(raw) if response.status == 200 else None)

    async def start(self) -> None:
        self._pool = self._new_pool()
        try:
            await self._check_upstream()
        except BaseException:
            await self.close()
            raise

    async def _check_upstream(self) -> None:
        try:
            status, payload = await self._get_models(self.config.connect_timeout * 2)
        except (HTTPClientError, TimeoutError, ValueError) as exc:
            raise RuntimeError(f"openai backend: cannot reach {self.config.url}: {exc!r}") from exc
        if status != 200:
            raise RuntimeError(f"openai backend: GET {self.config.url}/models returned HTTP {status}")
        models = {m.get("id"): m for m in payload.get("data", [])}
        if self._upstream_model not in models:
            raise RuntimeError(
                f"openai backend: {self.config.url} does not serve {self._upstream_model!r}; it serves "
                f"{', '.join(map(str, models)) or 'nothing'}"
            )
        reported = models[self._upstream_model].get("max_model_len")
        if isinstance(reported, int) and not self.config.max_model_len:
            self._max_model_len = reported

    async def health(self) -> bool:
        if self._pool is None:
            return False
        try:
            status, _ = await self._get_models(self.config.connect_timeout)
        except (HTTPClientError, TimeoutError, ValueError):
            return False
        return status == 200

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[OutputDelta]:
        if self._pool is None:
            raise Unavailable(f"openai backend for {self._name!r} is not started")
        check_sampling(request.sampling, UNSUPPORTED, "openai")
        path, body = request_body(request, self._upstream_model, self.config.return_token_ids)
        chat = request.messages is not None
        headers = {"Content-Type": "application/json", "X-Request-Id": request.request_id}
        try:
            # Leaving this block before the body's end closes the connection: the upstream aborts the request.
            async with await self._pool.request("POST", self._path + path, json.dumps(body).encode(), headers) as r:
                if r.status != 200:
                    raise upstream_error(r.status, _json_or_text(await r.read()))
                async for delta in _deltas(sse_data(r.iter_bytes()), chat):
                    yield delta
                await r.read()  # the rest ([DONE]), so the connection goes back to the pool
        except (HTTPClientError, TimeoutError) as exc:
            raise UpstreamError(f"upstream {self.config.url}: {exc}") from exc


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The `data:` payloads of a server-sent-event byte stream, split on blank lines (cheaper than
    decoding line by line: this runs once per token)."""
    pending = b""
    async for chunk in chunks:
        pending += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
        *events, pending = pending.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    yield line[5:].strip()


async def _deltas(payloads: AsyncIterator[bytes], chat: bool) -> AsyncIterator[OutputDelta]:
    """Parse the upstream SSE payloads. A choice's finishing delta is held back until the usage chunk
    (which follows every finish) so that usage rides on the request's last delta, as the contract says."""
    held: OutputDelta | None = None
    async for data in payloads:
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise upstream_error(500, chunk)
        usage = chunk.get("usage")
        for choice in chunk.get("choices") or ():
            delta = _choice_delta(choice, chat)
            if held is not None:
                yield held
                held = None
            if delta.finish_reason is not None:
                held = delta
            elif delta.text or delta.token_ids:
                yield delta
        if usage:
            if held is None:
                held = OutputDelta()
            held.usage = Usage(usage["prompt_tokens"], usage["completion_tokens"])
            yield held
            return
    if held is not None:
        yield held
        return
    raise UpstreamError("upstream stream ended without a finish reason")


def _choice_delta(choice: dict, chat: bool) -> OutputDelta:
    if chat:
        text = (choice.get("delta") or {}).get("content") or ""
    else:
        text = choice.get("text") or ""
    finish = choice.get("finish_reason")
    reason = None
    if finish:
        reason = _FINISH.get(finish)
        if reason is None:
            raise UpstreamError(f"upstream finished with unknown reason {finish!r}")
    token_ids = list(choice.get("token_ids") or [])
    delta = OutputDelta(index=choice.get("index", 0), token_ids=token_ids, text=text, finish_reason=reason)
    logprobs = choice.get("logprobs")
    if logprobs:
        delta.logprobs = _chat_logprobs(logprobs, token_ids) if chat else _completion_logprobs(logprobs, token_ids)
    return delta


def _completion_logprobs(lp: dict, token_ids: list[int]) -> list[TokenLogprob]:
    tokens = lp.get("tokens") or []
    ids = token_ids if len(token_ids) == len(tokens) else [-1] * len(tokens)
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    return [
        TokenLogprob(tid, tok, value, [TopLogprob(-1, t, v) for t, v in (top or {}).items()])
        for tid, tok, value, top in zip(ids, tokens, lp.get("token_logprobs") or [], tops, strict=False)
    ]


def _chat_logprobs(lp: dict, token_ids: list[int]) -> list[TokenLogprob]:
    content = lp.get("content") or []
    ids = token_ids if len(token_ids) == len(content) else [-1] * len(content)
    return [
        TokenLogprob(tid, item.get("token", ""), item.get("logprob"),
                     [TopLogprob(-1, t.get("token", ""), t.get("logprob")) for t in item.get("top_logprobs") or []])
        for tid, item in zip(ids, content, strict=False)
    ]
