"""`Backend.embed` on every installed backend (conftest.FACTORIES): the ones that serve embeddings give the
bundled model's mean-pooled, L2-normalised final hidden states, equal to transformers' own within 1e-5;
the others refuse with InvalidRequest (a 400) naming `model`, before any work."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from backends.embeddings import EmbeddingRequest
from backends.errors import ContextLengthExceeded, InvalidRequest
from tests.contract.conftest import MODEL_NAME, PARAMS

pytestmark = pytest.mark.asyncio(loop_scope="session")

EMBEDS = {"hf", "openai-turnout"}
"""The kinds that serve embeddings: our engine, and an OpenAI-compatible upstream that has them (another
turnout). vLLM in process, TGI, TensorRT-LLM and vLLM's server of a generating model refuse."""
TEXTS = ["The for statement is used to iterate", "yield", "The with statement wraps a block"]
_ids = itertools.count()
serving = pytest.mark.parametrize("harness", sorted(EMBEDS), indirect=True)
"""Run on the kinds that embed (the harness fixture takes these of its parameters)."""
refusing = pytest.mark.parametrize(
    "harness", [p for p in PARAMS if getattr(p, "values", (p,))[0] not in EMBEDS], indirect=True)


def request(inputs, **fields) -> EmbeddingRequest:
    return EmbeddingRequest(f"contract-embed-{next(_ids)}", MODEL_NAME, inputs, **fields)


@pytest.fixture(scope="session")
def reference_embeddings(bundled_model_dir, tokenizer):
    """Each text's final hidden states (transformers' base model), mean-pooled and normalised."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(bundled_model_dir, dtype=torch.float32).eval()

    def embed(text: str, dimensions: int | None = None) -> torch.Tensor:
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([tokenizer.encode(text)])).last_hidden_state[0]
        pooled = hidden.mean(dim=0)
        return F.normalize(pooled[:dimensions] if dimensions else pooled, dim=0)

    return embed


@serving
async def test_embeddings_equal_transformers_mean_pooling(harness, reference_embeddings):
    result = await harness.backend.embed(request(TEXTS))
    assert len(result.embeddings) == len(TEXTS)
    for text, vector in zip(TEXTS, result.embeddings, strict=True):
        got = torch.tensor(vector)
        assert abs(got.norm().item() - 1.0) < 1e-5
        assert (got - reference_embeddings(text)).abs().max().item() < 1e-5, text


@serving
async def test_token_ids_embed_like_their_text_and_usage_counts_them(harness, tokenizer):
    ids = [tokenizer.encode(text) for text in TEXTS]
    by_text = await harness.backend.embed(request(TEXTS))
    by_ids = await harness.backend.embed(request(ids))
    assert by_text.prompt_tokens == by_ids.prompt_tokens == sum(len(i) for i in ids)
    for a, b in zip(by_text.embeddings, by_ids.embeddings, strict=True):
        assert (torch.tensor(a) - torch.tensor(b)).abs().max().item() < 1e-6


@serving
async def test_dimensions_truncate_then_renormalise(harness, reference_embeddings):
    result = await harness.backend.embed(request(TEXTS[:1], dimensions=16))
    got = torch.tensor(result.embeddings[0])
    assert got.shape == (16,)
    assert (got - reference_embeddings(TEXTS[0], 16)).abs().max().item() < 1e-5


@serving
async def test_input_longer_than_the_context_is_context_length_exceeded(harness):
    with pytest.raises(ContextLengthExceeded) as caught:
        await harness.backend.embed(request(["for " * 1100]))
    assert caught.value.param == "input"
    assert await harness.backend.health() is True


@serving
async def test_token_id_outside_the_vocabulary_is_a_request_error(harness):
    with pytest.raises(InvalidRequest) as caught:
        await harness.backend.embed(request([[1, 2, 4096]]))
    assert caught.value.param == "input"


@refusing
async def test_refusal_is_a_400_naming_model(harness):
    with pytest.raises(InvalidRequest) as caught:
        await harness.backend.embed(request(TEXTS))
    assert caught.value.param == "model"
    assert "does not serve embeddings" in caught.value.message
    assert await harness.backend.health() is True
