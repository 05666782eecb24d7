"""Request checks every local backend applies the same way, so a bad request gets the same 400 whichever
engine serves the model."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from backends.errors import ContextLengthExceeded, InvalidRequest
from backends.types import GenerateRequest, SamplingParams

Unsupported = Iterable[tuple[str, Callable[[SamplingParams], bool]]]


def check_sampling(params: SamplingParams, unsupported: Unsupported, backend: str) -> None:
    """Range checks, then the features this backend cannot honour (each a 400 naming the parameter)."""
    try:
        params.validate()
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    for name, used in unsupported:
        if used(params):
            raise InvalidRequest(f"{name} is not supported by the {backend} backend (in this combination)",
                                 param=name)


def fit_context(params: SamplingParams, prompt_len: int, max_len: int, why: str = "") -> SamplingParams:
    """`params` with max_tokens resolved against the context, or ContextLengthExceeded (OpenAI's wording);
    `why`, when given, says where the limit comes from (" (...)" after the number)."""
    if prompt_len == 0:
        raise InvalidRequest("prompt must contain at least one token", param="prompt")
    if params.max_tokens is None:
        if prompt_len >= max_len:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {max_len} tokens{why}. However, your prompt has "
                f"{prompt_len} tokens, which leaves no room for a completion.",
                param="prompt",
            )
        return replace(params, max_tokens=max_len - prompt_len)
    if prompt_len + params.max_tokens > max_len:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_len} tokens{why}. However, you requested "
            f"{prompt_len + params.max_tokens} tokens ({prompt_len} in the prompt, "
            f"{params.max_tokens} for the completion). Please reduce the prompt or max_tokens.",
            param="max_tokens" if prompt_len < max_len else "prompt",
        )
    return params


def check_token_ids(ids: Iterable[int], vocab_size: int, param: str = "prompt") -> list[int]:
    ids = list(ids)
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequest(f"{param}: token id {bad[0]} is outside the vocabulary [0, {vocab_size})", param=param)
    return ids


def check_request_token_ids(request: GenerateRequest, vocab_size: int | None) -> None:
    """Every token id the request names (prompt ids, logit_bias keys, stop_token_ids) is one of the model's:
    an id past the logits' last row would fail inside the engine's batched step, not at the door. Negative
    ids are refused whatever the vocabulary (a negative index silently means a token from the end)."""
    fields = (("prompt", request.prompt_token_ids or ()), ("logit_bias", request.sampling.logit_bias),
              ("stop_token_ids", request.sampling.stop_token_ids))
    for param, ids in fields:
        if vocab_size is not None:
            check_token_ids(ids, vocab_size, param)
        elif bad := [t for t in ids if t < 0]:
            raise InvalidRequest(f"{param}: token ids must be >= 0, got {bad[0]}", param=param)
