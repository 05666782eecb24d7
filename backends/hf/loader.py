"""Load a local transformers causal LM and the facts the engine needs about it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from backends.artifact import verify_artifact
from backends.hf.config import HFEngineConfig

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    max_model_len: int
    eos_token_ids: list[int]
    pad_token_id: int
    adapters: tuple[str, ...] = ()
    """Names of the LoRA adapters loaded into `model` (then a peft PeftModel)."""


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


def _verify(model_dir: str) -> None:
    """Refuse a turnout artifact whose files changed since its manifest was written (ArtifactCorrupted)."""
    manifest = verify_artifact(model_dir)
    if manifest is None:
        logger.warning("%s has no manifest.json: loading it unverified (no checksums to check)", model_dir)
    else:
        logger.info("%s: %d files match manifest.json", model_dir, len(manifest["files"]))


def load_model(config: HFEngineConfig) -> LoadedModel:
    if not os.path.isdir(config.model):
        raise FileNotFoundError(f"model directory not found: {config.model!r}")
    _verify(config.model)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = AutoModelForCausalLM.from_pretrained(
        config.model,
        dtype=getattr(torch, config.dtype),
        attn_implementation=config.attn_implementation,
    )
    model = _with_adapters(model, config.adapters).to(config.device).eval()
    native_len = _context_length(model.config)
    max_model_len = config.max_model_len or native_len or 2048
    if native_len is not None and max_model_len > native_len:
        raise ValueError(f"max_model_len {max_model_len} exceeds the model's context length {native_len}")
    eos = _eos_ids(config.model, model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    return LoadedModel(model, tokenizer, max_model_len, eos, pad, tuple(name for name, _ in config.adapters))


def _with_adapters(model, adapters: tuple[tuple[str, str], ...]):
    """The model wrapped in peft with every adapter loaded under its name (itself when there are none)."""
    if not adapters:
        return model
    try:
        from peft import PeftModel
    except ImportError:
        raise RuntimeError("serving LoRA adapters needs peft: pip install 'turnout[tools]'") from None
    for name, directory in adapters:
        _verify(directory)
        if isinstance(model, PeftModel):
            model.load_adapter(directory, adapter_name=name)
        else:
            model = PeftModel.from_pretrained(model, directory, adapter_name=name)
        logger.info("LoRA adapter %r loaded from %s", name, directory)
    return model
