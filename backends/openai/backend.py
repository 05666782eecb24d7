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
from typing import Any
from urllib.parse import urlsplit

from backends.base import Backend
from backends.embeddings import EmbeddingRequest, EmbeddingResult
from backends.errors import InvalidRequest, Unavailable, UpstreamError
from backends.openai.config import OpenAIUpstreamConfig
from backends.openai.http1 import ConnectionPool, HTTPClientError
from backends.openai.wire import deltas, json_or_text, request_body, sse_data, upstream_error
from backends.types import GenerateRequest, ModelInfo, OutputDelta, ToolSupport
from backends.validation import check_sampling

UNSUPPORTED = (
    ("use_beam_search", lambda p: p.use_beam_search),
    ("prompt_logprobs", lambda p: p.prompt_logprobs is not None),
)


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

    @property
    def tool_support(self) -> ToolSupport:
        return ToolSupport.UPSTREAM  # tools, tool_choice and the tool messages go to the upstream as they are

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
                    raise upstream_error(r.status, json_or_text(await r.read()))
                async for delta in deltas(sse_data(r.iter_bytes()), chat):
                    yield delta
                await r.read()  # the rest ([DONE]), so the connection goes back to the pool
        except (HTTPClientError, TimeoutError) as exc:
            raise UpstreamError(f"upstream {self.config.url}: {exc}") from exc

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Passed through to the upstream's POST /embeddings (as floats: the front end encodes base64 itself)."""
        if self._pool is None:
            raise Unavailable(f"openai backend for {self._name!r} is not started")
        body: dict[str, Any] = {"model": self._upstream_model, "input": request.inputs, "encoding_format": "float"}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        headers = {"Content-Type": "application/json", "X-Request-Id": request.request_id}
        try:
            async with await self._pool.request("POST", self._path + "/embeddings", json.dumps(body).encode(),
                                                headers) as r:
                raw = await r.read()
        except (HTTPClientError, TimeoutError) as exc:
            raise UpstreamError(f"upstream {self.config.url}: {exc}") from exc
        payload = json_or_text(raw)
        if r.status in (404, 405) and not (isinstance(payload, dict) and isinstance(payload.get("error"), dict)):
            # No such route (vLLM's server registers none for a generating model): the model has no
            # embeddings here, which is the request's 400, not an unknown model.
            raise InvalidRequest(f"the model `{self._name}` does not serve embeddings: its upstream "
                                 f"{self.config.url} has no POST /embeddings (HTTP {r.status})", param="model")
        if r.status != 200:
            raise upstream_error(r.status, payload)
        try:
            data = sorted(payload["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in data]
            prompt_tokens = int(payload.get("usage", {}).get("prompt_tokens", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UpstreamError(f"upstream {self.config.url}: an embeddings answer not in OpenAI's shape "
                                f"({type(exc).__name__}: {exc})") from exc
        if len(vectors) != len(request.inputs):
            raise UpstreamError(f"upstream {self.config.url}: {len(vectors)} embeddings for "
                                f"{len(request.inputs)} inputs")
        return EmbeddingResult(vectors, prompt_tokens)
