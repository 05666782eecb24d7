"""Accumulating backend deltas into the finished choices of a non-streaming response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from backends.types import OutputDelta, TokenLogprob


@dataclass
class Choice:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob] | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, delta: OutputDelta) -> None:
        if delta.usage is not None:
            self.prompt_tokens += delta.usage.prompt_tokens
            self.completion_tokens += delta.usage.completion_tokens

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


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
        if delta.finish_reason is not None:
            choice.finish_reason = delta.finish_reason.value
        usage.add(delta)
    return [choices[i] for i in sorted(choices)], usage
