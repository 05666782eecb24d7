"""Our core `SamplingParams` -> keyword arguments for `tensorrt_llm.SamplingParams`.

Pure Python (no tensorrt_llm import), so the mapping is unit-tested on machines without a GPU.
Field names and meanings are those of `tensorrt_llm/sampling_params.py` (NVIDIA/TensorRT-LLM, read at
commit a98a9061) and of the 1.3.0rc7 API reference (`prompt_ignore_length` first appears there):

- greedy: TensorRT-LLM is greedy when top_k == 1 (in every version; 0.x ignored temperature == 0),
  and its LLM API refuses n/best_of > 1 under greedy decoding, so we do too.
- sampling: TensorRT-LLM 0.x fell back to greedy when top_k and top_p were both unset, so we always
  set both (top_k 0 = all tokens, top_p 1 = no nucleus cut).
- presence/frequency penalties: TensorRT-LLM counts prompt tokens unless `prompt_ignore_length`
  skips them; OpenAI semantics count output tokens only, so we skip the whole prompt.
- logit_bias: TensorRT-LLM takes a dense `embedding_bias` of vocab_size floats added to the logits.
- stop strings are *not* passed: the backend matches them on the text itself (across token
  boundaries, held back from the stream), the same way as the hf backend. TensorRT-LLM matches them
  on token ids only, which misses a stop string tokenized differently in context.
- detokenize is off: the backend detokenizes incrementally itself (one code path for every backend).
- guided decoding is returned as a plain dict of `GuidedDecodingParams` fields; the backend wraps it.
"""

from __future__ import annotations

from backends.errors import InvalidRequest
from backends.types import SamplingParams


def trtllm_sampling_kwargs(params: SamplingParams, *, max_tokens: int, prompt_len: int,
                           vocab_size: int | None, guided_decoding: bool) -> dict:
    """Raise InvalidRequest naming the first parameter TensorRT-LLM cannot honour as asked."""
    _refuse_unsupported(params, guided_decoding)
    kwargs: dict = {"max_tokens": max_tokens, "n": params.n, "detokenize": False,
                    "skip_special_tokens": params.skip_special_tokens}
    if params.use_beam_search:
        kwargs.update(use_beam_search=True, best_of=params.beam_width,
                      length_penalty=params.length_penalty, early_stopping=int(params.early_stopping))
    elif params.greedy:
        kwargs["top_k"] = 1
    else:
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        if params.min_p > 0.0:
            kwargs["min_p"] = params.min_p
        if params.best_of is not None and params.best_of > params.n:
            kwargs["best_of"] = params.best_of
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.min_tokens > 0:
        kwargs["min_tokens"] = params.min_tokens
    if params.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = params.repetition_penalty
    if params.presence_penalty != 0.0 or params.frequency_penalty != 0.0:
        kwargs.update(presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty,
                      prompt_ignore_length=prompt_len)
    if params.logit_bias:
        kwargs["embedding_bias"] = _dense_bias(params.logit_bias, vocab_size)
    if params.stop_token_ids:
        kwargs["stop_token_ids"] = list(params.stop_token_ids)
    if params.ignore_eos:
        kwargs["ignore_eos"] = True
    if params.logprobs is not None:
        kwargs["logprobs"] = params.logprobs
    if params.json_schema is not None:
        kwargs["guided_decoding"] = {"json": params.json_schema} if params.json_schema else {"json_object": True}
    return kwargs


def _refuse_unsupported(params: SamplingParams, guided_decoding: bool) -> None:
    if params.typical_p != 1.0:
        raise InvalidRequest("typical_p is not supported by the trtllm backend (TensorRT-LLM has no "
                             "locally typical sampling)", param="typical_p")
    if not params.use_beam_search and params.greedy and max(params.n, params.best_of or 1) > 1:
        name = "n" if params.n > 1 else "best_of"
        raise InvalidRequest(f"{name} > 1 needs sampling (temperature > 0 and top_k != 1) on the trtllm "
                             "backend: TensorRT-LLM refuses several choices under greedy decoding", param=name)
    if params.use_beam_search and params.best_of is not None and params.best_of != params.beam_width:
        raise InvalidRequest("best_of cannot be combined with beam search on the trtllm backend "
                             "(the beam width decides how many beams are searched)", param="best_of")
    if params.prompt_logprobs is not None:
        # TensorRT-LLM's prompt logprobs (from context logits) have not been checked on a GPU against
        # ours (one entry per prompt token, the first None); refuse rather than misalign them.
        raise InvalidRequest("prompt_logprobs (echo with logprobs) is not supported by the trtllm backend yet",
                             param="prompt_logprobs")
    if params.json_schema is not None and not guided_decoding:
        raise InvalidRequest("response_format json_schema / json_object needs the trtllm backend started "
                             "with guided_decoding_backend (xgrammar or llguidance)", param="response_format")


def _dense_bias(logit_bias: dict[int, float], vocab_size: int | None) -> list[float]:
    if vocab_size is None:
        raise InvalidRequest("logit_bias needs the model's vocabulary size, which is unknown", param="logit_bias")
    bias = [0.0] * vocab_size
    for token_id, value in logit_bias.items():
        if not 0 <= token_id < vocab_size:
            raise InvalidRequest(f"logit_bias token id {token_id} is outside the vocabulary [0, {vocab_size})",
                                 param="logit_bias")
        bias[token_id] = float(value)
    return bias
