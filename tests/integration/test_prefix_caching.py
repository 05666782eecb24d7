"""Prefix caching through the real server and the official client: a repeated prompt prefix is served from
the KV cache and the usage says how much (OpenAI's prompt_tokens_details.cached_tokens), /metrics counts
queries and hits under vLLM's names, and a request longer than the whole KV cache gets a 400 naming it."""

import random
import re

import httpx
import openai
import pytest

from tests.server_thread import ServerThread

BLOCK = 16


def counter(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def fresh_prompt(length: int) -> list[int]:
    """Token ids no other test sends (the session's server is shared)."""
    rng = random.Random()
    return [rng.randrange(10, 4000) for _ in range(length)]


def test_a_repeated_prompt_is_served_from_the_prefix_cache(server, client):
    prompt = fresh_prompt(70)
    hits_before = counter(server, "vllm:prefix_cache_hits_total")
    first = client.completions.create(model="turnout-tiny", prompt=prompt, max_tokens=3, temperature=0)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    again = client.completions.create(model="turnout-tiny", prompt=prompt, max_tokens=3, temperature=0)
    # Every full block but the one holding the last prompt token (its logits are computed anyway).
    assert again.usage.prompt_tokens_details.cached_tokens == (70 - 1) // BLOCK * BLOCK == 64
    assert again.choices[0].text == first.choices[0].text  # the cached keys are the computed ones
    assert counter(server, "vllm:prefix_cache_hits_total") - hits_before >= 64
    assert counter(server, "vllm:prefix_cache_queries_total") >= counter(server, "vllm:prefix_cache_hits_total")


def test_chat_requests_sharing_a_system_prompt_report_the_cached_part(server, client):
    system = " ".join(f"rule{random.randrange(10**6)}" for _ in range(40))
    answers = [client.chat.completions.create(
        model="turnout-tiny", max_tokens=2, temperature=0,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}])
        for question in ("What is first?", "And what comes last?")]
    assert answers[0].usage.prompt_tokens_details.cached_tokens == 0
    assert answers[1].usage.prompt_tokens_details.cached_tokens >= BLOCK


def test_streamed_usage_carries_the_cached_tokens(server, client):
    prompt = fresh_prompt(40)
    client.completions.create(model="turnout-tiny", prompt=prompt, max_tokens=1)
    stream = client.completions.create(model="turnout-tiny", prompt=prompt, max_tokens=2, stream=True,
                                       stream_options={"include_usage": True})
    usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert usage[-1].prompt_tokens_details.cached_tokens == 32


@pytest.fixture(scope="module")
def small_cache_server(bundled_model_dir):
    # The bundled model's keys and values take 8 KiB a token: 512 KiB is 64 tokens, 4 blocks.
    srv = ServerThread.for_model(bundled_model_dir, "turnout-tiny", kv_cache_memory="512KiB", max_num_seqs=4,
                                 num_threads=1).start()
    yield srv
    srv.stop()


def test_a_request_that_can_never_fit_the_cache_gets_a_400_naming_it(small_cache_server):
    client = openai.OpenAI(base_url=small_cache_server.base_url, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="turnout-tiny", prompt=fresh_prompt(50), max_tokens=30)
    error = raised.value.body
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"
    assert "64 tokens" in error["message"] and "--kv-cache-memory" in error["message"]


def test_requests_that_fit_are_served_whole_while_the_cache_preempts(small_cache_server):
    """Three requests of 60 tokens on a 64-token cache: two start, outgrow it, and the newer is preempted
    and recomputed; each still gets the output it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    client = openai.OpenAI(base_url=small_cache_server.base_url, api_key="unused", max_retries=0, timeout=120)
    prompts = [fresh_prompt(20) for _ in range(3)]

    def complete(prompt):
        return client.completions.create(model="turnout-tiny", prompt=prompt, max_tokens=40, temperature=0,
                                         extra_body={"ignore_eos": True, "return_token_ids": True})

    alone = [complete(p) for p in prompts]
    before = counter(small_cache_server, "vllm:num_preemptions_total")
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(complete, prompts))
    assert counter(small_cache_server, "vllm:num_preemptions_total") > before
    assert [o.choices[0].text for o in together] == [o.choices[0].text for o in alone]
    assert all(o.usage.completion_tokens == 40 for o in together)
