"""best_of: generate more candidates than asked for and return the n most likely.

Candidates are ranked by cumulative logprob (log_softmax of raw logits, summed over generated tokens),
as OpenAI's legacy completions did. Every candidate's tokens count as completion tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from backends.types import OutputDelta, Usage


async def best_of(stream: AsyncIterator[OutputDelta], n: int, num_prompt_tokens: int) -> AsyncIterator[OutputDelta]:
    candidates: dict[int, OutputDelta] = {}
    completion_tokens = 0
    with_logprobs = False
    async for delta in stream:
        with_logprobs |= delta.logprobs is not None
        merged = candidates.setdefault(delta.index, OutputDelta(index=delta.index, logprobs=[]))
        merged.token_ids.extend(delta.token_ids)
        merged.text += delta.text
        merged.logprobs.extend(delta.logprobs or [])
        if delta.finish_reason is not None:
            merged.finish_reason = delta.finish_reason
            merged.stop_reason = delta.stop_reason
            merged.cumulative_logprob = delta.cumulative_logprob
            completion_tokens += delta.usage.completion_tokens
    ranked = sorted(candidates.values(), key=lambda d: d.cumulative_logprob, reverse=True)[:n]
    for new_index, delta in enumerate(ranked):
        delta.index = new_index
        if not with_logprobs:
            delta.logprobs = None
        if new_index == len(ranked) - 1:
            delta.usage = Usage(num_prompt_tokens, completion_tokens)
        yield delta
