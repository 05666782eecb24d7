"""Embeddings from the engine's causal LM: final hidden states, pooled, L2-normalised.

The forward runs without any KV cache: an embedding needs every position of its input once, and nothing
after. Inputs of a batch are padded on the right, and attention is causal, so each real token attends only
to real tokens before it: padding cannot change a vector (tests/integration/test_embeddings.py checks a
batch of 100 against the inputs one at a time).

Which forward: for Llama-family models the lean forward's own fused weights (`FastLlamaForward
.hidden_states`), since on CPU the model's projection modules are stand-ins that refuse to run once their
weights were packed; for any other model the transformers base model (`model.model`, `model.transformer`,
...), whose `last_hidden_state` is after its final norm, as the lean forward's is.

Pooling: `mean` over the input's tokens (the default: a plain causal LM was not trained to gather a text
into its last token, and the mean is the steadier summary), or `last` (the last token's state, what
embedding models fine-tuned from causal LMs, e5-mistral and the like, use). A model directory saved by
sentence-transformers says which in 1_Pooling/config.json; the engine config's `embedding_pooling`
overrides it.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F

POOLING = ("mean", "last")
DEFAULT_POOLING = "mean"


def pooling_for(model_dir: str, configured: str | None) -> str:
    """The pooling to use: the configured one, else what the model's sentence-transformers pooling config
    asks for, else the default."""
    if configured is not None:
        return configured
    try:
        with open(os.path.join(model_dir, "1_Pooling", "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return DEFAULT_POOLING
    if config.get("pooling_mode_lasttoken"):
        return "last"
    return DEFAULT_POOLING


def _base_model(model):
    """The transformer under a causal LM's head (peft's wrapper and the head taken off)."""
    if hasattr(model, "get_base_model"):  # a peft PeftModel
        model = model.get_base_model()
    return model.base_model


class Embedder:
    """Pooled final hidden states of token-id lists. Engine thread only (it runs torch)."""

    def __init__(self, model, fast_forward, pooling: str, pad_token_id: int):
        if pooling not in POOLING:
            raise ValueError(f"embedding pooling must be one of {POOLING}, got {pooling!r}")
        self.model = model
        self.fast_forward = fast_forward
        self.pooling = pooling
        self.pad_token_id = pad_token_id
        self.hidden_size = model.config.hidden_size
        self.device = next(model.parameters()).device

    def __call__(self, inputs: list[list[int]]) -> torch.Tensor:
        """[len(inputs), hidden_size] float32: each input's pooled final hidden state, not yet normalised."""
        lengths = torch.tensor([len(ids) for ids in inputs])
        width = int(lengths.max())
        ids = torch.full((len(inputs), width), self.pad_token_id, dtype=torch.long)
        for row, tokens in enumerate(inputs):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        real = torch.arange(width)[None, :] < lengths[:, None]  # [batch, width]: not padding
        with torch.inference_mode():
            hidden = self._hidden_states(ids.to(self.device), real.to(self.device)).float().cpu()
        if self.pooling == "last":
            return hidden[torch.arange(len(inputs)), lengths - 1]
        summed = (hidden * real[..., None]).sum(dim=1)
        return summed / lengths[:, None]

    def _hidden_states(self, ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        if self.fast_forward is not None:
            return self.fast_forward.hidden_states(ids, positions)
        out = _base_model(self.model)(input_ids=ids, attention_mask=real.long(), position_ids=positions,
                                      use_cache=False)
        return out.last_hidden_state


def normalized(vectors: torch.Tensor, dimensions: int | None) -> list[list[float]]:
    """Each vector's first `dimensions` components (all of them for None), scaled to length 1."""
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    return F.normalize(vectors, dim=-1).tolist()
