"""The official openai client (sync and async, streaming and not) against the real server."""

import httpx
import openai
import pytest

from tests.integration.conftest import BUNDLED

PROMPT = "The for statement is used"


def count_tokens(server, text: str) -> int:
    return httpx.post(server.url + "/tokenize", json={"model": BUNDLED, "prompt": text}).json()["count"]


def test_completion_sync_non_streaming_usage_is_exact(server, client):
    out = client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=8, temperature=0,
                                    extra_body={"ignore_eos": True})
    choice = out.choices[0]
    assert out.object == "text_completion" and out.model == BUNDLED
    assert choice.finish_reason == "length" and choice.text
    assert out.usage.prompt_tokens == count_tokens(server, PROMPT)
    assert out.usage.completion_tokens == 8
    assert out.usage.total_tokens == out.usage.prompt_tokens + 8


def test_completion_stream_equals_non_stream(client):
    args = dict(model=BUNDLED, prompt=PROMPT, max_tokens=24, temperature=0)
    full = client.completions.create(**args)
    chunks = list(client.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert len([c for c in chunks if c.choices]) >= 2  # really streamed, one chunk per delta
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == full.usage.model_dump()


async def test_chat_async_streaming_and_not(server):
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    messages = [{"role": "system", "content": "You explain Python."},
                {"role": "user", "content": "What does the with statement do?"}]
    full = await client.chat.completions.create(model=BUNDLED, messages=messages, max_tokens=20, temperature=0)
    assert full.object == "chat.completion"
    assert full.choices[0].message.role == "assistant" and full.choices[0].message.content
    stream = await client.chat.completions.create(model=BUNDLED, messages=messages, max_tokens=20,
                                                  temperature=0, stream=True)
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    prompt_ids = httpx.post(server.url + "/tokenize", json={"model": BUNDLED, "messages": messages}).json()
    assert full.usage.prompt_tokens == prompt_ids["count"]
    await client.close()


async def test_completion_async_client(server):
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    out = await client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=5, temperature=0)
    stream = await client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=5, temperature=0,
                                             stream=True)
    assert "".join([c.choices[0].text async for c in stream]) == out.choices[0].text
    await client.close()


def test_sync_chat_stream_usage(client):
    chunks = list(client.chat.completions.create(
        model=BUNDLED, messages=[{"role": "user", "content": "Explain lists."}], max_tokens=6,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert chunks[-1].usage.completion_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])


def test_prompt_list_and_token_id_prompts(server, client):
    ids = httpx.post(server.url + "/tokenize", json={"model": BUNDLED, "prompt": PROMPT}).json()["tokens"]
    by_text = client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=6, temperature=0)
    by_ids = client.completions.create(model=BUNDLED, prompt=ids, max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    many = client.completions.create(model=BUNDLED, prompt=[PROMPT, "A class is"], max_tokens=6, temperature=0)
    assert [c.index for c in many.choices] == [0, 1]
    assert many.choices[0].text == by_text.choices[0].text
    assert many.usage.prompt_tokens == len(ids) + count_tokens(server, "A class is")


def test_stop_string_is_excluded_and_finishes_with_stop(client):
    free = client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=30, temperature=0).choices[0].text
    words = free.split()
    stop = next(w for w in words[1:] if w.isalpha())
    out = client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=30, temperature=0, stop=[stop])
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].text == free[: free.index(stop)]
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=BUNDLED, prompt=PROMPT, max_tokens=30, temperature=0, stop=[stop], stream=True))
    assert streamed == out.choices[0].text


def test_seed_reproduces_a_sampled_completion(client):
    args = dict(model=BUNDLED, prompt=PROMPT, max_tokens=16, temperature=1.0, seed=1234)
    a, b = (client.completions.create(**args).choices[0].text for _ in range(2))
    others = {client.completions.create(**{**args, "seed": s}).choices[0].text for s in range(5)}
    assert a == b
    assert len(others) > 1


def test_n_choices(client):
    out = client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=8, n=3, temperature=1.0, seed=7,
                                    extra_body={"ignore_eos": True})
    assert sorted(c.index for c in out.choices) == [0, 1, 2]
    assert out.usage.completion_tokens == 24


def test_echo_prepends_the_prompt(client):
    out = client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=4, temperature=0, echo=True)
    assert out.choices[0].text.startswith(PROMPT) and len(out.choices[0].text) > len(PROMPT)


def test_models_health_ready_and_detokenize(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == [BUNDLED]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").status_code == 200
    ids = httpx.post(server.url + "/tokenize", json={"prompt": "héllo 日本 🙂"}).json()["tokens"]
    assert httpx.post(server.url + "/detokenize", json={"tokens": ids}).json()["prompt"] == "héllo 日本 🙂"


@pytest.mark.parametrize("stream", [False, True])
def test_request_id_header_is_used_as_the_response_id(server, stream):
    r = httpx.post(server.base_url + "/completions", headers={"X-Request-Id": "my-id-123"},
                   json={"model": BUNDLED, "prompt": PROMPT, "max_tokens": 2, "stream": stream})
    assert r.status_code == 200
    assert "my-id-123" in r.text
