"""The Hugging Face backend: our continuous-batching engine behind the backend contract."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace

from backends.base import Backend
from backends.embeddings import EmbeddingRequest, EmbeddingResult
from backends.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound
from backends.hf import kv_budget
from backends.hf.best_of import best_of
from backends.hf.config import HFEngineConfig
from backends.hf.core import EngineCore
from backends.hf.embedding import Embedder, pooling_for
from backends.hf.engine import AsyncEngine
from backends.hf.engine_setup import build_core
from backends.hf.grammar import GrammarCompiler
from backends.hf.sequence import Sequence
from backends.tokenizing import Tokenizing
from backends.types import (
    BackendStats,
    GenerateRequest,
    ModelInfo,
    OutputDelta,
    SamplingParams,
    ToolSupport,
    Usage,
)
from backends.validation import check_request_token_ids, check_sampling, check_token_ids, fit_context

# Decoding features the engine does not implement yet; requests asking for them get a 400, not a surprise.
_UNSUPPORTED = (
    ("prompt_logprobs", lambda p: p.prompt_logprobs is not None and (p.use_beam_search or p.best_of)),
    ("use_beam_search", lambda p: p.use_beam_search and (p.json_schema is not None or p.logprobs is not None)),
)


class HFBackend(Backend):
    def __init__(self, config: HFEngineConfig):
        self.config = config
        self._name = config.served_model_name or os.path.basename(os.path.normpath(config.model))
        self._loaded = None
        self._tokenizing: Tokenizing | None = None
        self.engine: AsyncEngine | None = None
        self.grammars: GrammarCompiler | None = None
        self.kv_budget: kv_budget.KVBudget | None = None
        self._context_note = ""

    @property
    def info(self) -> ModelInfo:
        if self._loaded is None:
            return ModelInfo(name=self._name, max_model_len=self.config.max_model_len or 0,
                             max_running=self.config.max_num_seqs)
        return ModelInfo(name=self._name, max_model_len=self._loaded.max_model_len,
                         vocab_size=self._loaded.model.config.vocab_size, max_running=self.config.max_num_seqs)

    @property
    def adapters(self) -> list[ModelInfo]:
        return [ModelInfo(name=name, max_model_len=self.info.max_model_len, parent=self._name)
                for name, _ in self.config.adapters]

    @property
    def tokenizer(self):
        return self._loaded.tokenizer if self._loaded else None

    @property
    def tokenizing(self) -> Tokenizing | None:
        return self._tokenizing

    @property
    def tool_support(self) -> ToolSupport:
        return ToolSupport.GRAMMAR  # xgrammar constrains required and named calls (`json_schema`)

    async def start(self) -> None:
        def setup() -> EngineCore:  # runs on the engine's own thread: see backends/hf/engine.py
            built = build_core(self.config, self._name)
            self._loaded, self.kv_budget = built.loaded, built.kv_budget
            if built.context_limited_by_cache:
                self._context_note = f" (all its KV cache holds: --kv-cache-memory {self.config.kv_cache_memory})"
            core, loaded = built.core, built.loaded
            pooling = pooling_for(self.config.model, self.config.embedding_pooling)
            self.engine.embeddings.configure(Embedder(loaded.model, core.runner.fast_forward, pooling,
                                                      loaded.pad_token_id), core.scheduler.config.max_num_batched_tokens)
            return core

        self.engine = AsyncEngine(setup)
        await self.engine.start()
        loaded = self._loaded
        self._tokenizing = Tokenizing(loaded.tokenizer, loaded.max_model_len)
        self.grammars = GrammarCompiler(loaded.tokenizer, loaded.model.config.vocab_size, loaded.eos_token_ids,
                                        self.config)

    async def health(self) -> bool:
        return self.engine is not None and self.engine.alive

    @property
    def dead(self) -> bool:
        return self.engine is not None and self.engine.dead

    def stats(self) -> BackendStats | None:
        return self.engine.stats() if self.engine is not None else None

    async def close(self) -> None:
        if self.grammars is not None:
            self.grammars.close()
        if self.engine is not None:
            await asyncio.to_thread(self.engine.stop)
        if self._tokenizing is not None:
            self._tokenizing.close()

    async def _prompt_ids(self, request: GenerateRequest) -> list[int]:
        if request.messages is not None:
            raise InvalidRequest("the hf backend takes chat requests rendered to token ids", param="messages")
        check_request_token_ids(request, self._loaded.model.config.vocab_size)
        if request.prompt_token_ids is not None:
            return list(request.prompt_token_ids)
        return await self._tokenizing.encode(request.prompt or "")

    def _checked_params(self, request: GenerateRequest, prompt_ids: list[int]) -> SamplingParams:
        """The request's sampling params with max_tokens resolved, or InvalidRequest."""
        check_sampling(request.sampling, _UNSUPPORTED, "hf")
        params = fit_context(request.sampling, len(prompt_ids), self._loaded.max_model_len, self._context_note)
        if params.use_beam_search:
            # Beams decode in lockstep, so all of them must fit in the cache at once.
            needed = params.beam_width * self.kv_budget.block_size * -(-(len(prompt_ids) + params.max_tokens)
                                                                      // self.kv_budget.block_size)
            if needed > self.kv_budget.num_tokens:
                raise InvalidRequest(
                    f"beam search with {params.beam_width} beams of up to {len(prompt_ids) + params.max_tokens} "
                    f"tokens needs {needed} tokens of KV cache at once; the cache holds {self.kv_budget.num_tokens} "
                    "(--kv-cache-memory). Reduce max_tokens or the number of beams.", param="max_tokens")
        return params

    async def generate(self, request: GenerateRequest) -> AsyncIterator[OutputDelta]:
        if request.adapter is not None and request.adapter not in self._loaded.adapters:
            raise ModelNotFound(f"The model `{request.adapter}` does not exist: no such adapter on "
                                f"{self._name!r} (adapters: {', '.join(self._loaded.adapters) or 'none'})",
                                param="model")
        prompt_ids = await self._prompt_ids(request)
        params = self._checked_params(request, prompt_ids)
        num_seqs = params.beam_width if params.use_beam_search else max(params.n, params.best_of or 0)
        seqs = [
            Sequence(request.request_id, prompt_ids, _for_choice(params, i), index=i, adapter=request.adapter)
            for i in range(num_seqs)
        ]
        if params.json_schema is not None:
            constraints = await self.grammars.constraints(params.json_schema, len(seqs))
            for seq, constraint in zip(seqs, constraints, strict=True):
                seq.grammar = constraint
        # A beam group ends as n choices; otherwise every sequence ends as one (best_of ranks them after).
        stream = self.engine.generate(seqs, num_choices=params.n if params.use_beam_search else num_seqs)
        if num_seqs > params.n and not params.use_beam_search:
            async for delta in best_of(stream, params.n, len(prompt_ids)):
                yield delta
            return
        completion_tokens, cached_tokens, remaining = 0, 0, params.n
        async for delta in stream:
            if delta.finish_reason is not None:
                remaining -= 1
                completion_tokens += delta.usage.completion_tokens
                cached_tokens = max(cached_tokens, delta.usage.cached_tokens or 0)
                delta.usage = Usage(len(prompt_ids), completion_tokens, cached_tokens) if remaining == 0 else None
            yield delta

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        loaded = self._loaded
        hidden = loaded.model.config.hidden_size
        if request.dimensions is not None and not 1 <= request.dimensions <= hidden:
            raise InvalidRequest(f"dimensions must be between 1 and this model's {hidden}, got {request.dimensions}",
                                 param="dimensions")
        inputs = []
        for i, item in enumerate(request.inputs):
            if isinstance(item, str):
                ids = await self._tokenizing.encode(item, param="input")
            else:
                ids = check_token_ids(item, loaded.model.config.vocab_size, "input")
            if not ids:
                raise InvalidRequest(f"input[{i}] has no tokens: there is nothing to embed", param="input")
            if len(ids) > loaded.max_model_len:
                raise ContextLengthExceeded(
                    f"This model's maximum context length is {loaded.max_model_len} tokens, however input[{i}] "
                    f"has {len(ids)} tokens. Please reduce the length of the input.", param="input")
            inputs.append(ids)
        vectors = await self.engine.embed(inputs, request.dimensions)
        return EmbeddingResult(vectors, sum(len(ids) for ids in inputs))


def _for_choice(params: SamplingParams, index: int) -> SamplingParams:
    """Choice i of a seeded request uses seed + i, so the n choices differ but each is reproducible."""
    if index == 0 or params.seed is None:
        return params
    return replace(params, seed=params.seed + index)
