"""POST /v1/chat/completions, with tool calls (server/tool_calling/ says how each backend makes them)."""

from __future__ import annotations

import time
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import JSONResponse

from backends.errors import InvalidRequest, Overloaded
from backends.types import FinishReason, GenerateRequest, ToolCallDelta, ToolSupport, Usage
from server.http import sse, telemetry_middleware
from server.http.requests import client_read_timeout, parse_body, request_id, resolve_model, session_id
from server.http.streams import merge, until_disconnected
from server.http.telemetry_middleware import record_of
from server.openai.choices import Choice, collect, usage_dict, with_usage
from server.openai.convert import chat_sampling_params, chat_tools, message_dicts, render_chat
from server.openai.logprobs import chat_logprobs
from server.openai.schemas import ChatCompletionRequest
from server.openai.tool_calls import message_calls, stream_entries
from server.rate_limits import estimate_tokens
from server.tool_calling.plan import ToolPlan, tool_plan

SCHEMA_PARAM = "response_format"
"""The field a backend names when the JSON schema it was given cannot be served (before tools, the only
source of one)."""


async def create_chat_completion(request: Request):
    body = await parse_body(request, ChatCompletionRequest)
    backend = resolve_model(request, body.model)
    params = chat_sampling_params(body)
    functions, choice = chat_tools(body)
    messages = message_dicts(body.messages)
    plan = tool_plan(functions, choice, body.parallel_tool_calls, backend.tool_support, body.model,
                     history_has_calls=any(m.get("tool_calls") or m["role"] == "tool" for m in messages))
    constraint = plan.constraint()
    if constraint is not None:
        params.json_schema = constraint
    admitted = request.app.state.router.admit(record_of(request), 1, params,
                                              estimate_tokens([m.text() for m in body.messages]),
                                              patience=client_read_timeout(request))
    rid = request_id(request, "chatcmpl")
    common = dict(buffered=not body.stream, tenant=admitted.tenant, deadline=admitted.deadline,
                  patience=admitted.patience, session=session_id(request))
    if backend.tokenizing is None:  # a remote backend: its server applies the chat template
        upstream_tools = dict(tools=functions, tool_choice=choice, parallel_tool_calls=body.parallel_tool_calls) \
            if plan.support is ToolSupport.UPSTREAM and functions else {}
        generate_request = GenerateRequest(rid, body.model, params, messages=messages, **upstream_tools, **common)
    else:
        prompt_ids = await render_chat(backend.tokenizing, messages, body.add_generation_prompt,
                                       plan.template_tools())
        generate_request = GenerateRequest(rid, body.model, params, prompt_token_ids=prompt_ids, **common)
    observed = telemetry_middleware.observed(request, backend, generate_request)
    merged = merge([_tool_errors(observed) if constraint is not None else observed])
    base = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": body.model}

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse.response(_events(merged, base, include_usage, body.return_token_ids, plan))

    choices, usage = await until_disconnected(request, collect(merged, params.n))
    base["choices"] = [_choice(c, plan, body.return_token_ids) for c in choices]
    base["usage"] = usage_dict(usage)
    return JSONResponse(base, headers={"x-request-id": rid})


def _choice(c: Choice, plan: ToolPlan, token_ids: bool) -> dict:
    content, pieces = _read(plan.reader(), c.text, c.tool_calls, finished=True)
    message: dict = {"role": "assistant", "content": content}
    if pieces:
        message["content"] = content or None
        message["tool_calls"] = message_calls(pieces)
    return {
        "index": c.index,
        "message": message,
        "logprobs": None if c.logprobs is None else chat_logprobs(c.logprobs),
        "finish_reason": _finish_reason(c.finish_reason, bool(pieces)),
        **({"token_ids": c.token_ids} if token_ids else {}),
    }


def _read(reader, text: str, pieces: list[ToolCallDelta], finished: bool) -> tuple[str, list[ToolCallDelta]]:
    """(content, tool-call pieces) of a choice's text: as the backend sent them, or as the plan's reader
    reads the text (the reader's end once the choice has finished)."""
    if reader is None:
        return text, pieces
    read = reader.feed(text)
    if finished:
        read += reader.finish()
    return read.content, read.calls


def _finish_reason(reason: str | None, called: bool) -> str | None:
    """"tool_calls" for a choice that ended by itself having made calls (one cut off stays "length")."""
    return "tool_calls" if called and reason == FinishReason.STOP else reason


async def _tool_errors(stream):
    """The constraint came from `tools`: an error about it names that field, not `response_format`."""
    async with aclosing(stream):
        try:
            async for delta in stream:
                yield delta
        except (InvalidRequest, Overloaded) as exc:
            if exc.param == SCHEMA_PARAM:
                exc.param = "tools"
                exc.message = f"tools: a function's parameters: {exc.message}"
                exc.args = (exc.message,)
            raise


async def _events(merged, base: dict, include_usage: bool, token_ids: bool, plan: ToolPlan):
    base = {**base, "object": "chat.completion.chunk"}
    encoder = sse.ChunkEncoder(base, {"usage": None} if include_usage else None)
    usage = Usage()
    readers: dict[int, object] = {}
    called: set[int] = set()
    # Where a reply may be calls, its content starts as null (OpenAI's), so a stream helper that assembles
    # a reply of calls alone gets null, as the response does.
    opening = {"role": "assistant", "content": None if plan.calls_possible else ""}
    async for _, delta in merged:
        if delta.index not in readers:
            readers[delta.index] = plan.reader()
            first = {"index": delta.index, "delta": opening, "logprobs": None, "finish_reason": None}
            yield encoder.chunk(first)
        usage = with_usage(usage, delta)
        content, pieces = _read(readers[delta.index], delta.text, delta.tool_calls or [],
                                finished=delta.finish_reason is not None)
        wire_delta: dict = {}
        if content:
            wire_delta["content"] = content
        if pieces:
            called.add(delta.index)
            wire_delta["tool_calls"] = stream_entries(pieces)
        finish = delta.finish_reason.value if delta.finish_reason else None
        choice = {
            "index": delta.index,
            "delta": wire_delta,
            "logprobs": None if delta.logprobs is None else chat_logprobs(delta.logprobs),
            "finish_reason": _finish_reason(finish, delta.index in called),
        }
        if token_ids:
            choice["token_ids"] = delta.token_ids
        yield encoder.chunk(choice)
    if include_usage:
        yield sse.event({**base, "choices": [], "usage": usage_dict(usage)})
    yield sse.DONE
