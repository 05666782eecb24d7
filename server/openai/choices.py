"""Accumulating backend deltas into the finished choices of a non-streaming response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from backends.types import OutputDelta, TokenLogprob, ToolCallDelta, Usage


@dataclass
class Choice:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    """The pieces of the calls a backend sent (ToolSupport.UPSTREAM), in order."""


def with_usage(usage: Usage, delta: OutputDelta) -> Usage:
    """The usage so far plus the delta's (the last delta of each prompt's request carries one)."""
    return usage if delta.usage is None else usage + delta.usage


def usage_dict(usage: Usage) -> dict:
    out = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
           "total_tokens": usage.total_tokens}
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    return out


def choice_index(prompt_index: int, n: int, delta: OutputDelta) -> int:
    """OpenAI numbers choices prompt-major: prompt i's j-th choice is i * n + j."""
    return prompt_index * n + delta.index


async def collect(merged: AsyncIterator[tuple[int, OutputDelta]], n: int) -> tuple[list[Choice], Usage]:
    choices: dict[int, Choice] = {}
    usage = Usage()
    async for prompt_index, delta in merged:
        index = choice_index(prompt_index, n, delta)
        choice = choices.setdefault(index, Choice(index))
        choice.text += delta.text
        choice.token_ids.extend(delta.token_ids)
        if delta.logprobs is not None:
            choice.logprobs = (choice.logprobs or []) + delta.logprobs
        if delta.prompt_logprobs is not None:
            choice.prompt_logprobs = delta.prompt_logprobs
        if delta.tool_calls:
            choice.tool_calls.extend(delta.tool_calls)
        if delta.finish_reason is not None:
            choice.finish_reason = delta.finish_reason.value
        usage = with_usage(usage, delta)
    return [choices[i] for i in sorted(choices)], usage
