"""TensorRT-LLM outputs -> our `OutputDelta`s.

TensorRT-LLM hands back, for each choice, a `CompletionOutput` that grows: `token_ids` holds every
token so far, `logprobs` one entry per token, `finish_reason` is 'stop' | 'length' | 'timeout' |
'cancelled' once done (tensorrt_llm/executor/result.py, NVIDIA/TensorRT-LLM commit a678b91a). We keep
our own offsets rather than its `token_ids_diff`: that diff is only refreshed for the choice the latest
response was about, so with n > 1 it would repeat tokens of the other choices.

Text comes from our `IncrementalDetokenizer` (the hf backend's), which also matches stop strings on
the text and holds back anything that could be the start of one.
"""

from __future__ import annotations

import math

from backends.detokenizer import IncrementalDetokenizer
from backends.types import FinishReason, OutputDelta, SamplingParams, TokenLogprob, TopLogprob

FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "cancelled": FinishReason.ABORT,
    "timeout": FinishReason.ABORT,
}


class TokenTexts:
    """A token's text as the API shows it (for logprobs), decoded once per token id."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._cache[token_id] = self._tokenizer.decode([token_id])
        return text


class ChoiceStream:
    """One choice: turns successive snapshots of its CompletionOutput into deltas."""

    def __init__(self, index: int, tokenizer, prompt_ids: list[int], params: SamplingParams,
                 token_text: TokenTexts):
        self.index = index
        self.params = params
        self.token_text = token_text
        self.detokenizer = IncrementalDetokenizer(tokenizer, prompt_ids, params.stop, params.skip_special_tokens)
        self.num_seen = 0  # tokens of the snapshot already taken
        self.num_tokens = 0  # tokens emitted (less than num_seen after a stop string)
        self.logprob_sum = 0.0
        self.finished = False

    def update(self, output) -> OutputDelta | None:
        """The delta since the previous snapshot, or None when there is nothing new to say."""
        if self.finished:
            return None
        delta = OutputDelta(index=self.index)
        new_ids = list(output.token_ids[self.num_seen:])
        entries = list(output.logprobs or [])[self.num_seen:self.num_seen + len(new_ids)]
        self.num_seen += len(new_ids)
        want_logprobs = self.params.logprobs is not None
        if want_logprobs:
            delta.logprobs = []
        for position, token_id in enumerate(new_ids):
            delta.text += self.detokenizer.add_token(token_id)
            delta.token_ids.append(token_id)
            if position < len(entries):
                entry = token_logprob(token_id, entries[position], self.params.logprobs or 0, self.token_text)
                self.logprob_sum += entry.logprob or 0.0
                if want_logprobs:
                    delta.logprobs.append(entry)
            if self.detokenizer.stopped:
                delta.finish_reason = FinishReason.STOP
                break
        self.num_tokens += len(delta.token_ids)
        if delta.finish_reason is None and output.finish_reason is not None:
            delta.text += self.detokenizer.flush()
            delta.finish_reason = FINISH_REASONS.get(output.finish_reason, FinishReason.ABORT)
        if delta.finish_reason is not None:
            self.finished = True
            if self.params.logprobs is not None or self.params.best_of is not None:
                cumulative = getattr(output, "cumulative_logprob", None)
                delta.cumulative_logprob = self.logprob_sum if cumulative is None else float(cumulative)
        if not (delta.token_ids or delta.text or delta.finish_reason):
            return None
        return delta


def token_logprob(token_id: int, entry, top_k: int, token_text) -> TokenLogprob:
    """One position's logprobs. TensorRT-LLM gives either {token_id: Logprob(logprob, rank)} holding
    the top-k and the sampled token (pytorch runtime, TRT top-logprobs), or a bare float for the
    sampled token (older TRT runtime flow)."""
    if not isinstance(entry, dict):
        return TokenLogprob(token_id, token_text(token_id), float(entry))
    chosen = entry.get(token_id)
    ranked = sorted(entry.items(), key=lambda item: _rank(item[1]))
    top = [TopLogprob(t, token_text(t), float(lp.logprob)) for t, lp in ranked[:top_k]]
    return TokenLogprob(token_id, token_text(token_id), None if chosen is None else float(chosen.logprob), top)


def _rank(logprob) -> float:
    rank = getattr(logprob, "rank", None)
    return math.inf if rank is None else rank
