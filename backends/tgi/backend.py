"""The tgi backend: requests go to a remote TGI server through huggingface_hub's AsyncInferenceClient.

Each choice is one `text_generation(stream=True, details=True)` call. Usage is exact: the last stream
event's details carry `generated_tokens` and `input_length` (the prompt's tokens as TGI counted them);
when a stream ends early here (a stop string TGI overshot) or a server predates `input_length`, the
prompt is counted with TGI's POST /tokenize. Closing `generate` closes the HTTP stream, and TGI cancels
the request when its client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx2
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import (
    HfHubHTTPError,
    InferenceTimeoutError,
    OverloadedError,
    TextGenerationError,
)
from huggingface_hub.errors import ValidationError as TGIValidationError

from backends.base import Backend
from backends.errors import ContextLengthExceeded, InvalidRequest, Overloaded, TurnoutError, UpstreamError
from backends.stop_strings import StopMatcher
from backends.tgi.config import TGIBackendConfig
from backends.tgi.params import check_supported, tgi_parameters
from backends.types import (
    FinishReason,
    GenerateRequest,
    ModelInfo,
    OutputDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)

_FINISH = {"length": FinishReason.LENGTH, "eos_token": FinishReason.STOP, "stop_sequence": FinishReason.STOP}
# Phrases of TGI's (and turnout's) validation errors about a prompt that does not fit the context.
_CONTEXT_PHRASES = ("`inputs` tokens + `max_new_tokens`", "`inputs` must have less than", "maximum context length")


class _RequestClient(AsyncInferenceClient):
    """AsyncInferenceClient keeps every stream it opens until the client itself is closed. One of these per
    request, on the backend's shared connection pool, so closing it ends exactly that request's stream."""

    def __init__(self, pool: httpx2.AsyncClient, **kwargs):
        super().__init__(**kwargs)
        self._pool = pool

    async def _get_async_client(self) -> httpx2.AsyncClient:
        return self._pool


async def _read_error_body(response: httpx2.Response) -> None:
    # A streamed error response must be read before huggingface_hub can parse TGI's error out of it.
    if response.status_code >= 400:
        await response.aread()


class TGIBackend(Backend):
    def __init__(self, config: TGIBackendConfig):
        self.config = config
        self._info: ModelInfo | None = None
        self._pool: httpx2.AsyncClient | None = None

    @property
    def info(self) -> ModelInfo:
        if self._info is not None:
            return self._info
        return ModelInfo(name=self.config.served_model_name or "tgi", max_model_len=0)

    def _client(self) -> _RequestClient:
        if self._pool is None:
            raise UpstreamError("the tgi backend is not started")
        # provider="hf-inference": huggingface_hub's /info and /health helpers insist on it
        return _RequestClient(self._pool, model=self.config.base_url, provider="hf-inference",
                              timeout=self.config.timeout, token=self.config.api_key)

    async def start(self) -> None:
        self._pool = httpx2.AsyncClient(event_hooks={"response": [_read_error_body]}, follow_redirects=True,
                                        timeout=self.config.timeout)
        deadline = time.monotonic() + self.config.startup_timeout
        while True:
            try:
                info = await self._client().get_endpoint_info()
                break
            except (httpx2.TransportError, HfHubHTTPError) as exc:
                if time.monotonic() >= deadline:
                    raise UpstreamError(f"cannot read {self.config.base_url}/info: {exc}") from exc
                await asyncio.sleep(0.5)
        try:
            self._info = ModelInfo(name=self.config.served_model_name or info["model_id"],
                                   max_model_len=int(info["max_total_tokens"]), owned_by="tgi")
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamError(f"{self.config.base_url}/info is not TGI's Info: {info!r}") from exc

    async def health(self) -> bool:
        if self._pool is None:
            return False
        try:
            return await self._client().health_check()
        except httpx2.TransportError:
            return False

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    async def generate(self, request: GenerateRequest) -> AsyncIterator[OutputDelta]:
        params = request.sampling
        check_supported(params)
        if request.prompt_token_ids is not None:
            raise InvalidRequest("the tgi backend takes text prompts only: TGI's API has no token-id input",
                                 param="prompt")
        if request.adapter is not None:
            raise InvalidRequest("adapters are not supported by the tgi backend yet", param="model")
        prompt = request.prompt or ""
        streams = [self._choice(prompt, params, i) for i in range(params.n)]
        remaining, prompt_tokens, completion_tokens = params.n, None, 0
        async with contextlib.aclosing(_merge(streams)) as merged:
            async for delta, input_length in merged:
                if delta.finish_reason is not None:
                    remaining -= 1
                    completion_tokens += delta.usage.completion_tokens
                    prompt_tokens = prompt_tokens if input_length is None else input_length
                    delta.usage = None
                    if remaining == 0:
                        if prompt_tokens is None:
                            prompt_tokens = await self._count_tokens(prompt)
                        delta.usage = Usage(prompt_tokens, completion_tokens)
                yield delta

    async def _choice(self, prompt: str, params, index: int) -> AsyncIterator[tuple[OutputDelta, int | None]]:
        """One choice's deltas, each with the prompt length TGI reported (on the last one, when it did)."""
        stop = StopMatcher(params.stop)
        want_logprobs = params.logprobs is not None
        generated, cumulative = 0, 0.0
        async with self._client() as client:
            events = await _upstream(self.config.base_url, client.text_generation(
                prompt, stream=True, **tgi_parameters(params, index)))
            async for event in _upstream_events(self.config.base_url, events):
                token = event.token
                generated += 1
                delta = OutputDelta(index=index, token_ids=[token.id],
                                    text=stop.add("" if token.special else token.text))
                if want_logprobs:
                    cumulative += token.logprob
                    top = [TopLogprob(t.id, t.text, t.logprob) for t in (event.top_tokens or [])]
                    delta.logprobs = [TokenLogprob(token.id, token.text, token.logprob, top)]
                details = event.details
                if stop.matched is None and details is None:
                    yield delta, None
                    continue
                input_length = None
                if details is not None:
                    generated, input_length = details.generated_tokens, getattr(details, "input_length", None)
                if stop.matched is not None:  # possibly before TGI saw it: end here, closing the stream
                    delta.finish_reason, delta.stop_reason = FinishReason.STOP, stop.matched
                else:
                    delta.text += stop.flush()
                    delta.finish_reason = _FINISH.get(details.finish_reason, FinishReason.STOP)
                delta.usage = Usage(0, generated)
                if want_logprobs:
                    delta.cumulative_logprob = cumulative
                yield delta, input_length
                return
        raise UpstreamError(f"the stream from {self.config.base_url} ended before its last token")

    async def _count_tokens(self, prompt: str) -> int:
        """The prompt's length by TGI's POST /tokenize (a list with one entry per token)."""
        try:
            response = await self._pool.post(self.config.base_url + "/tokenize", json={"inputs": prompt})
            response.raise_for_status()
            return len(response.json())
        except (httpx2.HTTPError, ValueError) as exc:
            raise UpstreamError(
                f"cannot count the prompt's tokens with {self.config.base_url}/tokenize: {exc}"
            ) from exc


async def _upstream(url: str, call):
    """Await a huggingface_hub call, turning its errors into turnout's."""
    try:
        return await call
    except Exception as exc:
        raise _translate(url, exc) from exc


async def _upstream_events(url: str, events):
    iterator = aiter(events)
    try:
        while True:
            try:
                event = await anext(iterator)
            except StopAsyncIteration:
                return
            except Exception as exc:
                raise _translate(url, exc) from exc
            yield event
    finally:
        with contextlib.suppress(Exception):
            await iterator.aclose()


def _translate(url: str, exc: Exception) -> TurnoutError:
    if isinstance(exc, TurnoutError):
        return exc
    message = str(exc).removeprefix("Input validation error: ")
    if isinstance(exc, TGIValidationError):
        if any(phrase in message for phrase in _CONTEXT_PHRASES):
            return ContextLengthExceeded(message, param="prompt")
        return InvalidRequest(message)
    if isinstance(exc, OverloadedError):
        return Overloaded(f"the TGI server at {url} is overloaded: {message}")
    if isinstance(exc, TextGenerationError | HfHubHTTPError):
        return UpstreamError(f"the TGI server at {url} failed: {message}")
    if isinstance(exc, InferenceTimeoutError | httpx2.TimeoutException):
        return UpstreamError(f"the TGI server at {url} did not answer within {exc}")
    if isinstance(exc, httpx2.TransportError):
        return UpstreamError(f"cannot reach the TGI server at {url}: {type(exc).__name__}: {exc}")
    return UpstreamError(f"unexpected error talking to {url}: {type(exc).__name__}: {exc}")


async def _merge(streams: list[AsyncIterator]) -> AsyncIterator:
    """Items of all streams as they come (n > 1 runs n upstream requests at once); closing it closes all."""
    if len(streams) == 1:
        async with contextlib.aclosing(streams[0]) as only:
            async for item in only:
                yield item
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(stream: AsyncIterator) -> None:
        try:
            async with contextlib.aclosing(stream):
                async for item in stream:
                    queue.put_nowait(item)
            queue.put_nowait(done)
        except Exception as exc:  # handed to the consumer, which re-raises it
            queue.put_nowait(exc)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        for _ in streams:
            while (item := await queue.get()) is not done:
                if isinstance(item, Exception):
                    raise item
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
