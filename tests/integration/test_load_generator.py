"""The benchmark's load generator against the real server: every token counted, every chunk timed."""

import asyncio

import pytest

from bench.serve_bench import run_load
from tests.integration.conftest import BUNDLED


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_streamed_load_counts_tokens_from_usage_and_times_each_chunk(server, endpoint):
    report = asyncio.run(run_load(server.base_url, BUNDLED, concurrency=4, num_requests=8, prompt_tokens=16,
                                  output_tokens=8, endpoint=endpoint, warmup=2))
    assert report["completed"] == 8 and report["failed"] == 0, report["errors"]
    assert report["total_output_tokens"] == 64 and report["requests_with_unexpected_output_length"] == 0
    assert report["ttft_ms"]["count"] == 8
    # Our server sends one chunk per token: seven gaps per request after its first token.
    assert report["itl_ms"]["count"] == 8 * 7
    assert 0 < report["ttft_ms"]["p50"] <= report["e2e_latency_ms"]["p50"]


def test_whole_responses_and_errors_are_reported_not_raised(server):
    whole = asyncio.run(run_load(server.base_url, BUNDLED, concurrency=2, num_requests=4, prompt_tokens=16,
                                 output_tokens=8, stream=False))
    assert whole["completed"] == 4 and whole["total_output_tokens"] == 32 and whole["ttft_ms"] is None
    unknown = asyncio.run(run_load(server.base_url, "no-such-model", concurrency=2, num_requests=2,
                                   prompt_tokens=16, output_tokens=8,
                                   prompts=_prompts(server)))
    assert unknown["completed"] == 0 and unknown["failed"] == 2
    assert any("HTTP 404" in error for error in unknown["errors"])


def _prompts(server):
    import httpx

    from bench.prompts import from_server

    async def fetch():
        async with httpx.AsyncClient() as http:
            return await from_server(http, server.base_url, BUNDLED, 2, 16)

    return asyncio.run(fetch())
