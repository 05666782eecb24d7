"""Load a local transformers causal LM and the facts the engine needs about it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from backends.hf.config import HFEngineConfig


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    max_model_len: int
    eos_token_ids: list[int]
    pad_token_id: int


def _context_length(config) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _eos_ids(model_dir: str, model, tokenizer) -> list[int]:
    ids: list[int] = []
    try:
        generation_eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
    except OSError:
        generation_eos = None
    for value in (generation_eos, model.config.eos_token_id, tokenizer.eos_token_id):
        for token in value if isinstance(value, list) else [value]:
            if isinstance(token, int) and token not in ids:
                ids.append(token)
    return ids


def load_model(config: HFEngineConfig) -> LoadedModel:
    if not os.path.isdir(config.model):
        raise FileNotFoundError(f"model directory not found: {config.model!r}")
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = AutoModelForCausalLM.from_pretrained(
        config.model,
        dtype=getattr(torch, config.dtype),
        attn_implementation=config.attn_implementation,
    )
    model.to(config.device).eval()
    native_len = _context_length(model.config)
    max_model_len = config.max_model_len or native_len or 2048
    if native_len is not None and max_model_len > native_len:
        raise ValueError(f"max_model_len {max_model_len} exceeds the model's context length {native_len}")
    eos = _eos_ids(config.model, model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    return LoadedModel(model, tokenizer, max_model_len, eos, pad)
