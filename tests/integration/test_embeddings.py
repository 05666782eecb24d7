"""POST /v1/embeddings on the real server, through the official openai client (and raw httpx where the
client would hide the wire): shapes, normalisation, equality with the same pooling computed directly with
transformers, base64, batching, dimensions, errors in OpenAI's shape, metrics, and generation going on
while a big embedding request runs."""

from __future__ import annotations

import asyncio
import base64
import pydoc_data.topics
import re
import struct
import time

import httpx
import openai
import pytest
import torch
import torch.nn.functional as F

from tests.integration.conftest import BUNDLED

TOPICS = pydoc_data.topics.topics
# Texts of many lengths (a word to ~200 tokens), so a batch pads most of its rows.
_NAMES = sorted(TOPICS)
TEXTS = [TOPICS[_NAMES[i % len(_NAMES)]][i // len(_NAMES) * 60:][: 20 + 37 * (i % 23)] for i in range(100)]


@pytest.fixture(scope="module")
def reference(bundled_model_dir):
    """transformers' own final hidden states of a text, mean-pooled and L2-normalised: what the server must
    answer (its default pooling is `mean`)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    model = AutoModel.from_pretrained(bundled_model_dir, dtype=torch.float32).eval()

    def embed(text: str) -> torch.Tensor:
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([tokenizer.encode(text)])).last_hidden_state[0]
        return F.normalize(hidden.mean(dim=0), dim=0)

    embed.tokenizer = tokenizer
    return embed


def vectors(response) -> torch.Tensor:
    return torch.tensor([item.embedding for item in response.data])


def post(server, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}/embeddings", json={"model": BUNDLED, **body}, timeout=120)


def test_shapes_usage_and_norms(client, reference):
    response = client.embeddings.create(model=BUNDLED, input=TEXTS[:3])
    assert response.object == "list" and response.model == BUNDLED
    assert [item.index for item in response.data] == [0, 1, 2]
    assert all(item.object == "embedding" and len(item.embedding) == 256 for item in response.data)
    norms = vectors(response).norm(dim=1)
    assert (norms - 1).abs().max().item() < 1e-5
    tokens = sum(len(reference.tokenizer.encode(t)) for t in TEXTS[:3])
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens


def test_equal_to_transformers_pooling(client, reference):
    response = client.embeddings.create(model=BUNDLED, input=TEXTS[:8], encoding_format="float")
    for text, got in zip(TEXTS[:8], vectors(response), strict=True):
        assert (got - reference(text)).abs().max().item() < 1e-5, text[:40]


def test_a_string_and_token_ids_are_inputs_too(client, reference):
    ids = reference.tokenizer.encode(TEXTS[5])
    one_text = vectors(client.embeddings.create(model=BUNDLED, input=TEXTS[5]))
    one_ids = vectors(client.embeddings.create(model=BUNDLED, input=ids))
    several_ids = vectors(client.embeddings.create(model=BUNDLED, input=[ids, ids[:3]]))
    assert one_text.shape == one_ids.shape == (1, 256)
    assert (one_text - one_ids).abs().max().item() < 1e-6
    assert (several_ids[0] - one_ids[0]).abs().max().item() < 1e-5
    assert (several_ids[1] - reference(reference.tokenizer.decode(ids[:3]))).abs().max().item() < 1e-5


def test_base64_is_little_endian_float32(server, client):
    floats = post(server, {"input": TEXTS[:2], "encoding_format": "float"}).json()
    raw = post(server, {"input": TEXTS[:2], "encoding_format": "base64"}).json()
    for as_floats, as_base64 in zip(floats["data"], raw["data"], strict=True):
        packed = base64.b64decode(as_base64["embedding"])
        decoded = struct.unpack(f"<{len(packed) // 4}f", packed)
        assert len(decoded) == 256
        assert max(abs(a - b) for a, b in zip(decoded, as_floats["embedding"], strict=True)) < 1e-7
    # The client asks for base64 by itself and decodes it when the caller names no format (what the tests
    # above use); named, base64 comes back as the string, for the caller to decode.
    explicit = client.embeddings.create(model=BUNDLED, input=TEXTS[:2], encoding_format="base64")
    assert [item.embedding for item in explicit.data] == [item["embedding"] for item in raw["data"]]


def test_a_batch_of_100_equals_one_at_a_time(client):
    batch = vectors(client.embeddings.create(model=BUNDLED, input=TEXTS))
    assert batch.shape == (100, 256)
    singles = torch.cat([vectors(client.embeddings.create(model=BUNDLED, input=text)) for text in TEXTS])
    assert (batch - singles).abs().max().item() < 1e-5


def test_dimensions_truncate_and_renormalise(client):
    full = vectors(client.embeddings.create(model=BUNDLED, input=TEXTS[:2]))
    short = vectors(client.embeddings.create(model=BUNDLED, input=TEXTS[:2], dimensions=32))
    assert short.shape == (2, 32)
    assert (short - F.normalize(full[:, :32], dim=1)).abs().max().item() < 1e-5


def test_too_long_an_input_is_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=BUNDLED, input=["short", "for " * 1100])
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["code"] == "context_length_exceeded" and error["param"] == "input"
    assert "1024" in error["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": ["fine", ""]}, "input"),
    ({"input": [[]]}, "input"),
    ({"input": [1, 2, 4096]}, "input"),
    ({"input": [[1, -1]]}, "input"),
    ({"input": ["x"] * 2049}, "input"),
    ({"input": "x", "dimensions": 257}, "dimensions"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "model": "no-such-model"}, "model"),
])
def test_bad_requests_are_4xx_in_openai_shape_naming_the_field(server, body, param):
    response = post(server, body)
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].split(".")[0] == param, error


def test_user_is_accepted(client):
    assert len(client.embeddings.create(model=BUNDLED, input="x", user="someone").data) == 1


def _counter(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_the_route_and_its_prompt_tokens(server, client):
    def scrape() -> str:
        return httpx.get(f"{server.url}/metrics").text

    before = scrape()
    response = client.embeddings.create(model=BUNDLED, input=TEXTS[:4])
    after = scrape()
    requests = "turnout_requests_total"
    assert (_counter(after, requests, endpoint="/v1/embeddings", status="200")
            - _counter(before, requests, endpoint="/v1/embeddings", status="200")) == 1
    tokens = _counter(after, "turnout_prompt_tokens_total", model=BUNDLED) - _counter(
        before, "turnout_prompt_tokens_total", model=BUNDLED)
    assert tokens == response.usage.prompt_tokens
    assert re.search(r'turnout_requests_total\{[^}]*endpoint="/v1/embeddings"', after)


async def test_generation_goes_on_while_a_big_embedding_request_runs(async_client):
    """The engine alternates generation steps with bounded embedding batches: a stream keeps getting tokens
    while 2,048 inputs are embedded, and the embeddings finish too."""
    token_times: list[float] = []

    async def generate():
        stream = await async_client.completions.create(model=BUNDLED, prompt="The for statement", max_tokens=400,
                                                       temperature=0.0, stream=True,
                                                       extra_body={"ignore_eos": True})
        async for _ in stream:
            token_times.append(time.monotonic())

    generating = asyncio.ensure_future(generate())
    while not token_times:  # the stream has started
        await asyncio.sleep(0.01)
    started = time.monotonic()
    response = await async_client.embeddings.create(model=BUNDLED, input=(TEXTS * 21)[:2048])
    ended = time.monotonic()
    await generating
    assert len(response.data) == 2048
    during = [t for t in token_times if started < t < ended]
    assert len(during) >= 5, (f"only {len(during)} tokens streamed during the {ended - started:.2f} s embedding "
                              f"request: generation was held back")
