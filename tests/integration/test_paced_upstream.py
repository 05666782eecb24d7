"""The gateway benchmark's paced stand-in upstream, behind the openai backend: it streams what it was asked
for, at the pace it was given, in a shape the backend parses, and refuses what it does not do."""

import asyncio
import time

import httpx
import pytest

from backends.openai import OpenAIUpstreamBackend, OpenAIUpstreamConfig
from backends.types import FinishReason, GenerateRequest, SamplingParams
from bench.paced_upstream import PacedUpstreamProcess

STEP_MS = 5


@pytest.fixture(scope="module")
def upstream():
    with PacedUpstreamProcess("paced-model", step_ms=STEP_MS) as process:
        yield process


async def _generate(upstream, request: GenerateRequest):
    backend = OpenAIUpstreamBackend(OpenAIUpstreamConfig(url=upstream.base_url, model="paced-model"))
    await backend.start()
    try:
        return [delta async for delta in backend.generate(request)]
    finally:
        await backend.close()


@pytest.mark.parametrize("chat", [False, True])
def test_streams_max_tokens_one_per_step(upstream, chat):
    request = GenerateRequest(
        request_id="r1", model="paced-model", sampling=SamplingParams(max_tokens=8),
        prompt_token_ids=None if chat else [1, 2, 3], messages=[{"role": "user", "content": "hi"}] if chat else None)
    started = time.perf_counter()
    deltas = asyncio.run(_generate(upstream, request))
    elapsed = time.perf_counter() - started
    assert sum(len(d.token_ids) for d in deltas) == 8
    assert "".join(d.text for d in deltas) == " word" * 8
    assert deltas[-1].finish_reason is FinishReason.LENGTH and deltas[-1].usage.completion_tokens == 8
    assert elapsed >= 8 * STEP_MS / 1000  # token i leaves i steps after the request arrived


def test_refuses_unstreamed_requests_and_unknown_routes(upstream):
    completion = httpx.post(upstream.base_url + "/completions", json={"model": "paced-model", "prompt": "x"})
    assert completion.status_code == 400 and completion.json()["error"]["param"] == "stream"
    assert httpx.get(upstream.base_url + "/nothing").status_code == 404

