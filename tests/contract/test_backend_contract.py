"""The backend contract, checked the same way on every installed backend (see conftest.FACTORIES).

Each backend serves the bundled model; greedy answers must equal transformers' own `generate`. No test
relies on `ignore_eos` (TGI's API has none): the bundled model's greedy answer to PROMPT runs past 300
tokens without an end-of-sequence token.
"""

from __future__ import annotations

import asyncio
import itertools
from contextlib import aclosing

import pytest

from backends.errors import InvalidRequest
from backends.types import FinishReason, GenerateRequest, OutputDelta, SamplingParams
from tests.contract.conftest import MODEL_NAME, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROMPT = "The for statement is used to"
_ids = itertools.count()


def request(prompt: str = PROMPT, **sampling) -> GenerateRequest:
    return GenerateRequest(f"contract-{next(_ids)}", MODEL_NAME, SamplingParams(**sampling), prompt=prompt)


async def run(harness, req: GenerateRequest) -> list[OutputDelta]:
    async with aclosing(harness.backend.generate(req)) as stream:
        return [delta async for delta in stream]


def text_of(deltas: list[OutputDelta], index: int = 0) -> str:
    return "".join(d.text for d in deltas if d.index == index)


async def test_greedy_stream_equals_transformers_generate(harness, tokenizer, reference_greedy):
    deltas = await run(harness, request(max_tokens=12, temperature=0.0))
    expected = reference_greedy(PROMPT, 12)
    assert len(deltas) >= 2, "a 12-token answer should arrive as a stream, not one blob"
    assert text_of(deltas) == tokenizer.decode(expected, skip_special_tokens=True)
    token_ids = [t for d in deltas for t in d.token_ids]
    assert token_ids == expected


async def test_last_delta_carries_finish_reason_and_exact_usage(harness, tokenizer):
    deltas = await run(harness, request(max_tokens=7, temperature=0.0))
    assert [d.finish_reason for d in deltas[:-1]] == [None] * (len(deltas) - 1)
    last = deltas[-1]
    assert last.finish_reason == FinishReason.LENGTH
    assert last.usage is not None
    assert last.usage.prompt_tokens == len(tokenizer.encode(PROMPT))
    assert last.usage.completion_tokens == 7
    assert all(d.usage is None for d in deltas[:-1])


async def test_stop_string_ends_the_answer_before_it(harness, tokenizer, reference_greedy):
    full = tokenizer.decode(reference_greedy(PROMPT, 12), skip_special_tokens=True)
    words = full.split()
    stop = words[len(words) // 2]  # a word from the middle of the greedy answer
    deltas = await run(harness, request(max_tokens=12, temperature=0.0, stop=[stop]))
    text = text_of(deltas)
    assert text == full[: full.index(stop)]
    assert deltas[-1].finish_reason == FinishReason.STOP


async def test_seeded_sampling_is_reproducible(harness):
    def sampled(seed):
        return request(max_tokens=24, temperature=1.0, seed=seed)

    first = text_of(await run(harness, sampled(1234)))
    again = text_of(await run(harness, sampled(1234)))
    other = text_of(await run(harness, sampled(4321)))
    assert first == again
    assert first != other


async def test_closing_the_stream_aborts_the_request(harness):
    if harness.running is None:
        await _check_abort_by_token_count(harness)
        return
    assert await wait_until(lambda: harness.running() == 0)
    stream = harness.backend.generate(request(max_tokens=500, temperature=0.0))
    received = 0
    async for delta in stream:
        received += len(delta.token_ids) or 1
        if received >= 3:
            break
    assert await wait_until(lambda: harness.running() == 1, timeout=5), "the request never showed as running"
    await stream.aclose()
    assert await wait_until(lambda: harness.running() == 0), "the engine kept running the closed request"


async def test_health_while_serving(harness):
    assert await harness.backend.health() is True
    assert harness.backend.info.name == MODEL_NAME
    assert harness.backend.info.max_model_len == 1024


async def test_prompt_longer_than_the_context_is_a_request_error(harness):
    long_prompt = "for " * 1100
    with pytest.raises(InvalidRequest) as caught:
        await run(harness, request(prompt=long_prompt, max_tokens=8))
    assert "context length" in caught.value.message
    assert await harness.backend.health() is True


async def test_out_of_range_parameter_is_a_request_error(harness):
    with pytest.raises(InvalidRequest, match="top_p"):
        await run(harness, request(max_tokens=4, top_p=1.5))


async def _check_abort_by_token_count(harness, attempts: int = 3):
    """With EOS ignored an unaborted request generates exactly max_tokens. Two checks: it stopped short of
    that, and it generated fewer than half of max_tokens after the close. The second is counted from the
    close, not from the request: vLLM on a loaded 2-core machine can have generated hundreds of tokens
    before its API server sends the first chunk (seen in CI: 719 of 1,000), which no client can abort. An
    attempt in which the upstream had generated all of them by the close (seen in CI too) shows nothing
    either way, and is made again."""
    max_tokens = 1000
    for _ in range(attempts):
        before = harness.generated()
        stream = harness.backend.generate(request(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
        for _ in range(3):
            await anext(stream)
        await stream.aclose()
        at_close = harness.generated()
        # Wait until the upstream is idle (its counter still for a second): without the abort that is only
        # after all 1,000 tokens.
        last, still_since = at_close, asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - still_since < 1.0:
            await asyncio.sleep(0.2)
            now = harness.generated()
            if now != last:
                last, still_since = now, asyncio.get_running_loop().time()
        if at_close - before < max_tokens:
            break
    else:
        pytest.fail(f"in {attempts} attempts the upstream had generated all {max_tokens} tokens before the client "
                    "could close the stream: nothing shows whether the close aborts")
    generated, after_close = last - before, last - at_close
    assert 3 <= generated < max_tokens, (f"the upstream generated all {generated} tokens ({at_close - before} "
                                         "by the close): the close did not abort it")
    assert after_close < max_tokens / 2, f"the upstream generated {after_close} tokens after the close"
