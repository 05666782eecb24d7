"""TGI request schemas -> core types, and core outputs -> TGI's response pieces. The only place that
knows both vocabularies (the handlers in server/tgi/routes.py only move these around)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from backends.errors import InvalidRequest
from backends.types import FinishReason, OutputDelta, SamplingParams, TokenLogprob
from server.tgi.schemas import GenerateParameters, Grammar


def sampling_params(p: GenerateParameters, n: int = 1, stream: bool = False) -> SamplingParams:
    """The core parameters for TGI's; a sampled request without a seed gets a random one, so that the
    seed TGI reports in `details` reproduces the answer. Logprobs are asked for whenever TGI returns them:
    every stream event carries its token's, and details list them."""
    sampling = p.sampling
    seed = p.seed
    if sampling and seed is None:
        seed = random.getrandbits(63)  # room for seed + i of best_of's candidates
    wants_logprobs = stream or p.details or p.decoder_input_details or (p.best_of or 1) > 1
    return SamplingParams(
        max_tokens=p.max_new_tokens,
        temperature=(1.0 if p.temperature is None else p.temperature) if sampling else 0.0,
        top_p=1.0 if p.top_p is None else p.top_p,
        top_k=p.top_k or 0,
        typical_p=1.0 if p.typical_p is None else p.typical_p,
        repetition_penalty=1.0 if p.repetition_penalty is None else p.repetition_penalty,
        frequency_penalty=p.frequency_penalty or 0.0,
        seed=seed if sampling else None,
        stop=list(p.stop),
        n=n,
        logprobs=(p.top_n_tokens or 0) if wants_logprobs else None,
        prompt_logprobs=0 if p.decoder_input_details else None,
        json_schema=json_schema(p.grammar),
    )


def json_schema(grammar: Grammar | None) -> dict | None:
    if grammar is None:
        return None
    if grammar.type == "regex":
        raise InvalidRequest("grammar of type `regex` is not supported by turnout; use `json`", param="grammar")
    value = grammar.value
    if grammar.type == "json_schema":  # TGI's JsonSchemaConfig: {"name", "schema", "strict"}
        value = value.get("schema") if isinstance(value, dict) else None
    if value is None and grammar.type == "json_object":
        value = {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"grammar value must be a JSON schema object, got {value!r}", param="grammar")
    return value


def finish_reason(delta: OutputDelta) -> str:
    """TGI's three reasons; it has no stop token ids, so any other STOP is the model's end."""
    if delta.finish_reason is FinishReason.LENGTH:
        return "length"
    return "stop_sequence" if isinstance(delta.stop_reason, str) else "eos_token"


class TokenEncoder:
    """Turns a choice's deltas into TGI `Token`s: one per token id, carrying the delta's new text.

    TGI's token text is the incremental text of that token, so the texts of non-special tokens add up to
    `generated_text`; a special token (EOS) carries its own spelling, as in TGI, and adds no text. The
    stop string TGI leaves at the end of the text is put back on the last token.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special_ids = frozenset(getattr(tokenizer, "all_special_ids", None) or ())

    def tokens(self, delta: OutputDelta) -> tuple[list[dict], list[list[dict]]]:
        """The delta's tokens, and for each its top alternatives (empty lists when not asked for)."""
        text = delta.text
        if isinstance(delta.stop_reason, str):
            text += delta.stop_reason
        logprobs = delta.logprobs or []
        out, tops = [], []
        last = len(delta.token_ids) - 1
        for i, token_id in enumerate(delta.token_ids):
            item = logprobs[i] if i < len(logprobs) else None
            special = token_id in self.special_ids
            token_text = self._spelling(token_id, item) if special else (text if i == last else "")
            out.append(self.token(token_id, token_text, item.logprob if item else None, special))
            tops.append([self.token(t.token_id, t.token, t.logprob, t.token_id in self.special_ids)
                         for t in item.top] if item else [])
        if not delta.token_ids and delta.finish_reason is not None:
            # A backend may end a choice with a delta that has no token; TGI always ends on one.
            out.append(self.token(0, text, None, not text))
            tops.append([])
        return out, tops

    @staticmethod
    def token(token_id: int, text: str, logprob: float | None, special: bool) -> dict:
        return {"id": token_id, "text": text, "logprob": logprob, "special": special}

    def _spelling(self, token_id: int, item: TokenLogprob | None) -> str:
        if item is not None:
            return item.token
        return self.tokenizer.decode([token_id]) if self.tokenizer is not None else ""


def prefill(items: list[TokenLogprob] | None) -> list[dict]:
    """TGI's `PrefillToken`s; the first prompt token's logprob is null, as in TGI."""
    return [{"id": t.token_id, "text": t.token, "logprob": t.logprob} for t in items or []]


@dataclass
class Sequence:
    """One finished choice, accumulated for a non-streaming answer."""

    index: int
    seed: int | None
    text: str = ""
    tokens: list[dict] = field(default_factory=list)
    top_tokens: list[list[dict]] = field(default_factory=list)
    prefill: list[dict] = field(default_factory=list)
    finish_reason: str = "length"
    generated_tokens: int = 0
    cumulative_logprob: float = 0.0

    def add(self, delta: OutputDelta, encoder: TokenEncoder) -> None:
        tokens, tops = encoder.tokens(delta)
        self.tokens += tokens
        self.top_tokens += tops
        self.text += delta.text
        self.generated_tokens += len(delta.token_ids)
        if delta.prompt_logprobs is not None:
            self.prefill = prefill(delta.prompt_logprobs)
        if delta.finish_reason is not None:
            self.finish_reason = finish_reason(delta)
            if isinstance(delta.stop_reason, str):
                self.text += delta.stop_reason  # TGI's generated_text ends with the stop sequence
            self.cumulative_logprob = delta.cumulative_logprob or 0.0

    def details(self, with_top_tokens: bool) -> dict:
        out = {
            "finish_reason": self.finish_reason,
            "generated_tokens": self.generated_tokens,
            "seed": self.seed,
            "prefill": self.prefill,
            "tokens": self.tokens,
        }
        if with_top_tokens:
            out["top_tokens"] = self.top_tokens
        return out
