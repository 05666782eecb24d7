"""The TensorRT-LLM backend: NVIDIA's engine in process, through its `LLM` API.

TensorRT-LLM APIs used, as read in NVIDIA/TensorRT-LLM (commit named per item) and the 1.3.0rc7 API
reference (nvidia.github.io/TensorRT-LLM/1.3.0rc7/llm-api/reference.html):
- `tensorrt_llm.LLM(model=..., **kwargs)`: the PyTorch runtime over a Hugging Face checkpoint (the
  default since 1.0); `tensorrt_llm._tensorrt_engine.LLM`: the TensorRT runtime over a built engine
  (tensorrt_llm/_tensorrt_engine/__init__.py, commit 1620d4fd). Before 1.0 `tensorrt_llm.LLM` was the
  TensorRT runtime itself, so that is the fallback when `_tensorrt_engine` does not exist.
- `LLM.generate_async(inputs, sampling_params, streaming=True)`, inputs a list of token ids
  (tensorrt_llm/inputs/data.py `prompt_inputs`) -> `RequestOutput`, an async iterator
  of itself whose `.outputs` are `CompletionOutput`s; it raises ValueError for requests the engine
  refuses (tensorrt_llm/llmapi/llm.py `_check_arguments`, commit 4c05a748), RuntimeError once shut down.
- `RequestOutput.abort()` / `.finished` (tensorrt_llm/executor/result.py `GenerationResult`, commit
  a678b91a); `LLM.shutdown()`; `LLM.tokenizer.tokenizer` is the Hugging Face tokenizer
  (`TransformersTokenizer`).
- `tensorrt_llm.SamplingParams`, `GuidedDecodingParams`, `KvCacheConfig(free_gpu_memory_fraction=...)`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import AsyncIterator

from backends.base import Backend
from backends.errors import ContextLengthExceeded, EngineDead, InvalidRequest
from backends.trtllm.config import TRTLLMConfig, llm_kwargs, model_max_len, model_vocab_size, resolved_runtime
from backends.trtllm.outputs import ChoiceStream, TokenTexts
from backends.trtllm.params import trtllm_sampling_kwargs
from backends.types import FinishReason, GenerateRequest, ModelInfo, OutputDelta, Usage

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "the trtllm backend needs the tensorrt_llm package, which runs only on Linux with an NVIDIA GPU and "
    "CUDA. Install it there with `pip install \"turnout[trtllm]\"` (NVIDIA publishes the wheels on PyPI and "
    "https://pypi.nvidia.com; see https://nvidia.github.io/TensorRT-LLM/installation/linux.html), or run "
    "turnout inside NVIDIA's container nvcr.io/nvidia/tensorrt-llm/release. Without a GPU, serve the model "
    "with the hf backend, or run trtllm-serve elsewhere behind the openai backend (deploy/trtllm.md)."
)


class TensorRTLLMNotInstalled(RuntimeError):
    """tensorrt_llm cannot be imported here."""


def tensorrt_llm_available() -> bool:
    return importlib.util.find_spec("tensorrt_llm") is not None


class TRTLLMBackend(Backend):
    def __init__(self, config: TRTLLMConfig):
        self.config = config
        self._llm = None
        self._hf_tokenizer = None
        self._token_texts: TokenTexts | None = None
        self._max_model_len = config.max_model_len or model_max_len(config.model) or 0
        self._vocab_size: int | None = None
        self._sampling_fields: frozenset[str] = frozenset()
        self._sampling_params_class = None  # tensorrt_llm classes, once started
        self._guided_decoding_class = None
        self._closed = False
        self._in_flight: set = set()  # results not yet seen finished; pruned by live_requests()

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name=self.config.name, max_model_len=self._max_model_len, vocab_size=self._vocab_size)

    @property
    def tokenizer(self):
        return self._hf_tokenizer

    async def start(self) -> None:
        if not tensorrt_llm_available():
            raise TensorRTLLMNotInstalled(INSTALL_HINT)
        # TensorRT-LLM sets up MPI and its executor worker in the constructor; trtllm-serve builds the
        # LLM on the main thread before serving, so we do too, blocking this loop while the model loads.
        self._llm = self._build_llm()
        wrapper = self._llm.tokenizer
        self._hf_tokenizer = getattr(wrapper, "tokenizer", wrapper)
        self._token_texts = TokenTexts(self._hf_tokenizer)
        self._vocab_size = model_vocab_size(self.config.model) or len(self._hf_tokenizer)
        configured = getattr(getattr(self._llm, "args", None), "max_seq_len", None)
        if isinstance(configured, int) and configured > 0:
            self._max_model_len = configured
        if not self._max_model_len:
            raise ValueError(f"cannot tell the context length of {self.config.model!r}; set max_model_len")

    def _build_llm(self):
        try:
            import tensorrt_llm
            from tensorrt_llm.llmapi import KvCacheConfig
            from tensorrt_llm.sampling_params import GuidedDecodingParams
        except Exception as exc:  # installed but broken here: no CUDA driver, mismatched torch, ...
            raise TensorRTLLMNotInstalled(f"tensorrt_llm is installed but does not import ({exc}); "
                                          + INSTALL_HINT) from exc

        self._sampling_params_class = tensorrt_llm.SamplingParams
        self._guided_decoding_class = GuidedDecodingParams
        self._sampling_fields = frozenset(f.name for f in dataclasses.fields(tensorrt_llm.SamplingParams))
        kwargs = llm_kwargs(self.config)
        if self.config.kv_cache_free_gpu_memory_fraction is not None:
            kwargs["kv_cache_config"] = KvCacheConfig(
                free_gpu_memory_fraction=self.config.kv_cache_free_gpu_memory_fraction)
        llm_class = tensorrt_llm.LLM
        if resolved_runtime(self.config) == "tensorrt" and importlib.util.find_spec("tensorrt_llm._tensorrt_engine"):
            from tensorrt_llm._tensorrt_engine import LLM as llm_class
        return llm_class(**kwargs)

    async def health(self) -> bool:
        if self._llm is None or self._closed:
            return False
        executor = getattr(self._llm, "_executor", None)  # None once shut down (BaseLLM.shutdown)
        return executor is not None and not (hasattr(executor, "is_shutdown") and executor.is_shutdown())

    async def close(self) -> None:
        self._closed = True
        if self._llm is not None:
            self._llm.shutdown()  # on the loop's thread, like the constructor (MPI)

    def _prompt_ids(self, request: GenerateRequest) -> list[int]:
        if request.prompt_token_ids is not None:
            bad = [t for t in request.prompt_token_ids if not 0 <= t < self._vocab_size]
            if bad:
                raise InvalidRequest(f"token id {bad[0]} is outside the vocabulary [0, {self._vocab_size})",
                                     param="prompt")
            ids = list(request.prompt_token_ids)
        else:
            ids = self._hf_tokenizer.encode(request.prompt or "")
        if not ids:
            raise InvalidRequest("prompt must contain at least one token", param="prompt")
        return ids

    def _max_tokens(self, requested: int | None, prompt_len: int) -> int:
        max_len = self._max_model_len
        if requested is None:
            if prompt_len >= max_len:
                raise ContextLengthExceeded(
                    f"This model's maximum context length is {max_len} tokens. However, your prompt has "
                    f"{prompt_len} tokens, which leaves no room for a completion.", param="prompt")
            return max_len - prompt_len
        if prompt_len + requested > max_len:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {max_len} tokens. However, you requested "
                f"{prompt_len + requested} tokens ({prompt_len} in the prompt, {requested} for the "
                f"completion). Please reduce the prompt or max_tokens.",
                param="max_tokens" if prompt_len < max_len else "prompt")
        return requested

    def _sampling_params(self, request: GenerateRequest, prompt_ids: list[int]):
        params = request.sampling
        try:
            params.validate()
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        kwargs = trtllm_sampling_kwargs(
            params, max_tokens=self._max_tokens(params.max_tokens, len(prompt_ids)), prompt_len=len(prompt_ids),
            vocab_size=self._vocab_size, guided_decoding=self.config.guided_decoding_backend is not None)
        unknown = sorted(set(kwargs) - self._sampling_fields)
        if unknown:
            # e.g. prompt_ignore_length, which OpenAI-style penalties need, is new in TensorRT-LLM 1.x.
            cause = "presence_penalty" if unknown == ["prompt_ignore_length"] else unknown[0]
            raise InvalidRequest(f"{cause} needs a newer tensorrt_llm (its SamplingParams has no "
                                 f"{', '.join(unknown)})", param=cause)
        if "embedding_bias" in kwargs:  # TensorRT-LLM 0.x takes only a tensor (1.x also converts lists)
            import torch

            kwargs["embedding_bias"] = torch.tensor(kwargs["embedding_bias"], dtype=torch.float32)
        if "guided_decoding" in kwargs:
            kwargs["guided_decoding"] = self._guided_decoding_class(**kwargs["guided_decoding"])
        try:
            return self._sampling_params_class(**kwargs)
        except ValueError as exc:
            raise InvalidRequest(f"tensorrt_llm refused the sampling parameters: {exc}") from None

    async def generate(self, request: GenerateRequest) -> AsyncIterator[OutputDelta]:
        if self._llm is None or self._closed:
            raise EngineDead("the trtllm backend is not running")
        prompt_ids = self._prompt_ids(request)
        trt_params = self._sampling_params(request, prompt_ids)
        params = request.sampling
        # Beam search rewrites whole beams each step and best_of re-ranks choices at the end, so those
        # are not incremental: wait for the final result and send each choice as one delta.
        streaming = not params.use_beam_search and trt_params.best_of == params.n
        try:
            result = self._llm.generate_async(prompt_ids, sampling_params=trt_params, streaming=streaming)
        except ValueError as exc:  # the engine's own checks (lengths, beam width, batch size)
            raise InvalidRequest(str(exc)) from None
        except RuntimeError as exc:
            raise EngineDead(f"the trtllm backend cannot take requests: {exc}") from None
        choices = [ChoiceStream(i, self._hf_tokenizer, prompt_ids, params, self._token_texts)
                   for i in range(params.n)]
        self.live_requests()  # prune, so the set holds only unfinished requests
        self._in_flight.add(result)
        try:
            async for delta in _deltas(result, choices, streaming, len(prompt_ids)):
                yield delta
        finally:
            if result.finished:
                self._in_flight.discard(result)
            else:
                _abort(result)  # the client went away, or every choice hit a stop string

    def live_requests(self) -> list:
        """Requests handed to TensorRT-LLM that it has not finished (tests check that aborts land)."""
        self._in_flight = {r for r in self._in_flight if not r.finished}
        return list(self._in_flight)


async def _deltas(result, choices: list[ChoiceStream], streaming: bool, prompt_len: int
                  ) -> AsyncIterator[OutputDelta]:
    """Deltas of all choices in arrival order; the last one carries the usage summed over choices."""
    def usage() -> Usage:
        return Usage(prompt_len, sum(c.num_tokens for c in choices))

    remaining = len(choices)
    async for snapshot in (result if streaming else _final(result)):
        for choice, output in zip(choices, snapshot.outputs, strict=False):
            delta = choice.update(output)
            if delta is None:
                continue
            if delta.finish_reason is not None:
                remaining -= 1
                delta.usage = usage() if remaining == 0 else None
            yield delta
        if remaining == 0:
            return
    # The engine ended the request without finishing some choice (it should not): say so rather than hang.
    unfinished = [c for c in choices if not c.finished]
    for position, choice in enumerate(unfinished):
        choice.finished = True
        last = position == len(unfinished) - 1
        yield OutputDelta(index=choice.index, finish_reason=FinishReason.ABORT, usage=usage() if last else None)


async def _final(result):
    yield await result.aresult()


def _abort(result) -> None:
    try:
        result.abort()
    except Exception:  # the engine may already be shut down (its executor gone); nothing is left to stop
        logger.debug("aborting a trtllm request failed", exc_info=True)
