"""One timed request against an OpenAI-compatible server, streamed or not, and what became of it.

Timing follows `vllm bench serve`, so numbers compare directly: time to first token (TTFT) is the arrival
of the first chunk that carries a choice (for chat, one with a token, not the bare role announcement that
some servers send long before the first token); inter-token latencies (ITL) are the gaps between successive
such chunks; end-to-end latency is send -> the last such chunk (send -> the whole body, unstreamed).
Output tokens come from the server's `usage`, never from counting chunks, because a server may put several
tokens in one chunk or send a chunk with none; without `usage` the caller counts them with a tokenizer.

A request fails, and is counted by kind, never as a success, when:
  rate_limited     HTTP 429 (rate limit or a full queue: overload, not a fault; its `code` is kept)
  http_error       any other status but 200
  error_event      the stream sent `data: {"error": ...}` (a server that failed mid-stream)
  connection_lost  the connection closed or reset mid-response (a cut stream)
  missing_done     a 200 stream that ended cleanly without `data: [DONE]` (silently truncated)
  no_output        a complete answer with no token-bearing chunk at all
  invalid_response a body or chunk that is not the JSON the API promises
  timeout          no complete answer within the client's timeout

The client is aiohttp, whose HTTP parser is C: on a small machine the load generator shares the CPU with
the server it measures, and httpx's pure-Python parser spent about 3x as much client CPU per streamed
chunk (~100 vs ~34 us), which the server's throughput then paid for.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from itertools import pairwise

import aiohttp

from backends.openai.wire import sse_data

ENDPOINTS = ("completions", "chat")
FAILURE_KINDS = ("rate_limited", "http_error", "error_event", "connection_lost", "missing_done", "no_output",
                 "invalid_response", "timeout")


@dataclass
class RequestResult:
    start: float
    """perf_counter time the request was sent."""
    end: float = 0.0
    """perf_counter time of the last token-bearing chunk (streamed) or of the whole body (not streamed)."""
    first_token: float | None = None
    """perf_counter time of the first token-bearing chunk; None for non-streamed requests."""
    chunk_times: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    """From `usage` (the server's count, special tokens included); else the workload's count."""
    output_tokens: int | None = None
    """From `usage`; None until known (a server that sends no usage: the caller counts `text`)."""
    expected_output_tokens: int | None = None
    text: str = ""
    kind: str | None = None
    """One of FAILURE_KINDS when the request failed."""
    error: str | None = None
    """What went wrong, for a person; None for a success."""

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
        if self.ttft is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)

    def fail(self, kind: str, error: str) -> None:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}")
        self.kind, self.error = kind, error


def build_payload(endpoint: str, model: str, prompt: str | list[int], max_tokens: int, *, stream: bool,
                  temperature: float | None = 0.0, ignore_eos: bool = True, extra_body: dict | None = None) -> dict:
    """The request body. `ignore_eos` (a vLLM extension turnout shares) makes every request generate exactly
    `max_tokens`, so runs compare whatever the model samples; `max_tokens` (not `max_completion_tokens`) is
    the name every OpenAI-compatible server knows."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
    body: dict = {"model": model, "max_tokens": max_tokens, "stream": stream}
    if temperature is not None:
        body["temperature"] = temperature
    if ignore_eos:
        body["ignore_eos"] = True
    if stream:
        body["stream_options"] = {"include_usage": True}
    if endpoint == "chat":
        if not isinstance(prompt, str):
            raise ValueError("the chat endpoint takes text prompts, not token ids")
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return {**body, **(extra_body or {})}


async def send(session: aiohttp.ClientSession, url: str, endpoint: str, payload: dict,
               headers: dict | None = None) -> RequestResult:
    """POST `payload` to `url` and time it. Failures are recorded in the result, never raised, so one bad
    request does not end a load run."""
    result = RequestResult(start=time.perf_counter(), expected_output_tokens=payload.get("max_tokens"))
    try:
        async with session.post(url, json=payload, headers=headers) as response:
            if response.status != 200:
                _refused(result, response.status, await response.read())
            elif payload.get("stream"):
                await _stream(response, endpoint, result)
            else:
                _whole(result, endpoint, json.loads(await response.read()))
    except TimeoutError:
        result.fail("timeout", "no complete answer within the client timeout")
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
            aiohttp.ClientConnectionError) as exc:
        result.fail("connection_lost", f"{type(exc).__name__}: {exc}")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        result.fail("invalid_response", f"{type(exc).__name__}: {exc}")
    except asyncio.CancelledError:
        raise
    if not result.end:
        result.end = time.perf_counter()
    return result


def _refused(result: RequestResult, status: int, body: bytes) -> None:
    code = _error_code(body)
    label = f"HTTP {status}" + (f" {code}" if code else "")
    result.fail("rate_limited" if status == 429 else "http_error", f"{label}: {body[:200]!r}")


def _error_code(body: bytes) -> str | None:
    """OpenAI's `error.code` (turnout: `rate_limit_exceeded`, `queue_full`, ...), else its `type`."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return str(code) if code else None
    return None


def _whole(result: RequestResult, endpoint: str, body: dict) -> None:
    result.end = time.perf_counter()
    if "error" in body:
        result.fail("error_event", f"error in a 200 body: {str(body['error'])[:200]}")
        return
    choices = body["choices"]
    if endpoint == "chat":
        result.text = "".join((c.get("message") or {}).get("content") or "" for c in choices)
    else:
        result.text = "".join(c.get("text") or "" for c in choices)
    _take_usage(result, body.get("usage"))
    if not choices:
        result.fail("no_output", "a 200 answer with no choices")


def _carries_token(endpoint: str, choice: dict) -> tuple[bool, str]:
    if endpoint == "completions":
        return True, choice.get("text") or ""
    delta = choice.get("delta") or {}
    content = delta.get("content") or ""
    return not ("role" in delta and not content), content


def _take_usage(result: RequestResult, usage: dict | None) -> None:
    if usage:
        result.prompt_tokens = usage.get("prompt_tokens") or result.prompt_tokens
        if usage.get("completion_tokens") is not None:
            result.output_tokens = usage["completion_tokens"]


async def _stream(response: aiohttp.ClientResponse, endpoint: str, result: RequestResult) -> None:
    """Read server-sent events as they arrive; each `data:` payload is one chunk, timed when it is read.
    The body is read to its end (after [DONE] too), so the connection is reused."""
    done = False
    async for data in sse_data(response.content.iter_any()):
        now = time.perf_counter()
        if data == b"[DONE]":
            done = True
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            result.fail("error_event", f"error event in stream: {str(chunk['error'])[:200]}")
            return
        for choice in chunk.get("choices") or ():
            token, text = _carries_token(endpoint, choice)
            if token:
                if result.first_token is None:
                    result.first_token = now
                result.chunk_times.append(now)
                result.end = now
                result.text += text
                break  # one chunk is one arrival, however many choices it carries
        _take_usage(result, chunk.get("usage"))
    if not done:
        result.fail("missing_done", "the stream ended without data: [DONE] (truncated)")
    elif result.first_token is None:
        result.fail("no_output", "the stream carried no token")
