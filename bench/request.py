"""One timed request against an OpenAI-compatible server, streamed or not.

Timing is taken on the client, as a user sees it: time to first token is the arrival of the first chunk that
carries a generated token (a chat stream's role-only announcement does not count), inter-token latency is
the gap between successive such chunks. Output tokens are counted from the server's `usage`, never from
chunks, because a server may put several tokens in one chunk or send a chunk with no new text.

The client is aiohttp, whose HTTP parser is C: on a small machine the load generator shares the CPU with
the server it measures, and httpx's pure-Python parser spent about 3x as much client CPU per streamed
chunk (~100 vs ~34 us), which the server's throughput then paid for.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from itertools import pairwise

import aiohttp

from backends.openai.wire import sse_data
from bench.prompts import Prompt

ENDPOINTS = ("completions", "chat")


@dataclass
class RequestResult:
    start: float
    end: float = 0.0
    first_token: float | None = None
    """perf_counter time of the first token-bearing chunk; None for non-streamed requests."""
    chunk_times: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.start

    @property
    def inter_token_gaps(self) -> list[float]:
        return [b - a for a, b in pairwise(self.chunk_times)]

    @property
    def time_per_output_token(self) -> float | None:
        """Decode time per token after the first (vLLM's TPOT); None when it is undefined."""
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


def build_payload(endpoint: str, model: str, prompt: Prompt, output_tokens: int, stream: bool,
                  temperature: float) -> dict:
    """The request body. `ignore_eos` (a vLLM extension our server shares) makes every request generate
    exactly `max_tokens`, so runs are comparable whatever the model samples."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
    body: dict = {"model": model, "max_tokens": output_tokens, "temperature": temperature,
                  "ignore_eos": True, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.token_ids if prompt.token_ids is not None else prompt.text
    return body


def _carries_token(endpoint: str, choice: dict) -> bool:
    if endpoint == "completions":
        return True
    delta = choice.get("delta") or {}
    return not ("role" in delta and not delta.get("content"))


def _take_usage(result: RequestResult, usage: dict | None) -> None:
    if usage:
        result.prompt_tokens = usage.get("prompt_tokens") or 0
        result.output_tokens = usage.get("completion_tokens") or 0


async def send(session: aiohttp.ClientSession, url: str, endpoint: str, payload: dict,
               headers: dict | None = None) -> RequestResult:
    """POST `payload` to `url` (with `headers`, e.g. an x-request-id) and time it; failures are recorded in
    the result, never raised, so one bad request does not end a load run."""
    result = RequestResult(start=time.perf_counter())
    try:
        async with session.post(url, json=payload, headers=headers) as response:
            if response.status != 200:
                result.error = f"HTTP {response.status}: {(await response.read())[:200]!r}"
            elif payload.get("stream"):
                await _stream(response, endpoint, result)
            else:
                _take_usage(result, json.loads(await response.read()).get("usage"))
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.end = time.perf_counter()
    if result.ok and result.output_tokens == 0:
        result.error = "response carried no usage (is stream_options.include_usage supported?)"
    return result


async def _stream(response: aiohttp.ClientResponse, endpoint: str, result: RequestResult) -> None:
    """Read server-sent events as they arrive; each `data:` payload is one chunk, timed when it is read."""
    async for data in sse_data(response.content.iter_any()):
        now = time.perf_counter()
        if data == b"[DONE]":  # read on to the end of the body, so the connection is reused
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            result.error = f"error event in stream: {str(chunk['error'])[:200]}"
            return
        if any(_carries_token(endpoint, c) for c in chunk.get("choices") or []):
            if result.first_token is None:
                result.first_token = now
            result.chunk_times.append(now)
        _take_usage(result, chunk.get("usage"))
