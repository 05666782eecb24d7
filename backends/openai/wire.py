"""The OpenAI API on the wire, as the openai backend speaks it to its upstream: the request body it sends
for a core request, the server-sent events it reads back as core deltas, and upstream error responses as
our error classes. Pure functions of bytes and dicts, testable without a server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from backends.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    TurnoutError,
    Unavailable,
    UpstreamError,
)
from backends.types import (
    FinishReason,
    GenerateRequest,
    OutputDelta,
    SamplingParams,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
    Usage,
)

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.ABORT,
           "content_filter": FinishReason.STOP, "tool_calls": FinishReason.STOP}


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
        if request.tools:
            body.update(_tool_fields(request))
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


def _tool_fields(request: GenerateRequest) -> dict[str, Any]:
    tools = []
    for tool in request.tools or ():
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.parameters is not None:
            function["parameters"] = tool.parameters
        tools.append({"type": "function", "function": function})
    fields: dict[str, Any] = {"tools": tools}
    choice = request.tool_choice
    if choice is not None:
        fields["tool_choice"] = ({"type": "function", "function": {"name": choice.name}}
                                 if choice.mode == "function" else choice.mode)
    if not request.parallel_tool_calls:
        fields["parallel_tool_calls"] = False
    return fields


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


def json_or_text(raw: bytes) -> Any:
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


async def deltas(payloads: AsyncIterator[bytes], chat: bool) -> AsyncIterator[OutputDelta]:
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
            elif delta.text or delta.token_ids or delta.tool_calls:
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
    tool_calls = None
    if chat:
        wire_delta = choice.get("delta") or {}
        text = wire_delta.get("content") or ""
        if wire_delta.get("tool_calls"):
            tool_calls = [_tool_call_delta(item) for item in wire_delta["tool_calls"]]
    else:
        text = choice.get("text") or ""
    finish = choice.get("finish_reason")
    reason = None
    if finish:
        reason = _FINISH.get(finish)
        if reason is None:
            raise UpstreamError(f"upstream finished with unknown reason {finish!r}")
    token_ids = list(choice.get("token_ids") or [])
    delta = OutputDelta(index=choice.get("index", 0), token_ids=token_ids, text=text, finish_reason=reason,
                        tool_calls=tool_calls)
    logprobs = choice.get("logprobs")
    if logprobs:
        delta.logprobs = _chat_logprobs(logprobs, token_ids) if chat else _completion_logprobs(logprobs, token_ids)
    return delta


def _tool_call_delta(item: dict) -> ToolCallDelta:
    try:
        function = item.get("function") or {}
        return ToolCallDelta(int(item["index"]), item.get("id"), function.get("name"),
                             function.get("arguments") or "")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UpstreamError(f"upstream sent a tool call not in OpenAI's shape: {item!r:.200}") from exc


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
