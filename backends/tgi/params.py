"""Core SamplingParams -> the keyword arguments of huggingface_hub's `text_generation` (TGI's parameters).

What TGI cannot honour is rejected with InvalidRequest naming the parameter, never silently dropped.
"""

from __future__ import annotations

from backends.errors import InvalidRequest
from backends.types import SamplingParams
from backends.validation import check_sampling

# (parameter, is it asked for) — none of these has a TGI counterpart.
_UNSUPPORTED = (
    ("min_tokens", lambda p: p.min_tokens != 0),
    ("min_p", lambda p: p.min_p != 0.0),
    ("presence_penalty", lambda p: p.presence_penalty != 0.0),
    ("logit_bias", lambda p: bool(p.logit_bias)),
    ("stop_token_ids", lambda p: bool(p.stop_token_ids)),
    ("ignore_eos", lambda p: p.ignore_eos),
    ("best_of", lambda p: p.best_of is not None and p.best_of > p.n),
    ("prompt_logprobs", lambda p: p.prompt_logprobs is not None),
    ("use_beam_search", lambda p: p.use_beam_search),
    ("skip_special_tokens", lambda p: not p.skip_special_tokens),
)
MAX_SEED = 2**64 - 1


def check_supported(params: SamplingParams) -> None:
    check_sampling(params, _UNSUPPORTED, "tgi")
    if params.seed is not None and not 0 <= params.seed <= MAX_SEED - params.n:
        raise InvalidRequest(f"seed must be in [0, 2**64 - n) for the tgi backend, got {params.seed}", param="seed")


def tgi_parameters(params: SamplingParams, choice: int) -> dict:
    """Keyword arguments for one choice; choice i of a seeded request uses seed + i, as the hf backend does."""
    kwargs: dict = {
        "details": True,  # the last event then carries finish_reason, generated_tokens and input_length
        "return_full_text": False,
        "max_new_tokens": params.max_tokens,
        "stop": list(params.stop) or None,
        "top_n_tokens": params.logprobs or None,
        "repetition_penalty": params.repetition_penalty if params.repetition_penalty != 1.0 else None,
        "frequency_penalty": params.frequency_penalty or None,
        "grammar": _grammar(params.json_schema),
    }
    if params.greedy:
        kwargs["do_sample"] = False
    else:
        kwargs.update(
            do_sample=True,
            temperature=params.temperature,
            top_p=params.top_p if params.top_p < 1.0 else None,  # TGI takes top_p < 1 only
            top_k=params.top_k or None,
            typical_p=params.typical_p if params.typical_p < 1.0 else None,
            seed=None if params.seed is None else params.seed + choice,
        )
    return kwargs


def _grammar(schema: dict | None) -> dict | None:
    if schema is None:
        return None
    # TGI requires `properties`; an empty schema means "any JSON object" in turnout.
    return {"type": "json", "value": schema or {"type": "object", "properties": {}}}
