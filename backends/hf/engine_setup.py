"""Building the engine core from its config: load the model, size the KV cache, make the scheduler.

One function for the backend (on its engine thread) and the benchmarks that drive the core in process, so
both build exactly the same engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from backends.hf import kv_budget
from backends.hf.config import HFEngineConfig
from backends.hf.core import EngineCore
from backends.hf.loader import LoadedModel, load_model
from backends.hf.scheduler import SchedulerConfig

logger = logging.getLogger(__name__)


@dataclass
class BuiltEngine:
    core: EngineCore
    loaded: LoadedModel
    kv_budget: kv_budget.KVBudget
    context_limited_by_cache: bool
    """max_model_len was lowered to what the KV cache holds."""


def build_core(config: HFEngineConfig, name: str | None = None) -> BuiltEngine:
    """The engine core for `config`; call it on the thread that will run the engine's steps (engine.py
    says why)."""
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    loaded = load_model(config)
    kv = kv_budget.budget(config.kv_cache_memory, loaded.model.config, loaded.model.dtype, loaded.model.device,
                          config.block_size, config.max_num_seqs, loaded.max_model_len)
    limited = kv.num_tokens < loaded.max_model_len
    if limited:
        logger.warning("the KV cache holds %d tokens, fewer than max_model_len %d: max_model_len is lowered to %d "
                       "(raise --kv-cache-memory to serve longer sequences)",
                       kv.num_tokens, loaded.max_model_len, kv.num_tokens)
        loaded.max_model_len = kv.num_tokens
    logger.info("%s: %s%s", name or config.model, kv.describe(loaded.max_model_len),
                "" if config.enable_prefix_caching else "; prefix caching off")
    scheduler_config = SchedulerConfig(
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=max(config.max_num_batched_tokens, config.max_num_seqs),
        num_blocks=kv.num_blocks, block_size=kv.block_size, enable_prefix_caching=config.enable_prefix_caching,
    )
    core = EngineCore(loaded.model, loaded.tokenizer, scheduler_config, loaded.max_model_len,
                      loaded.eos_token_ids, loaded.pad_token_id)
    return BuiltEngine(core, loaded, kv, limited)
