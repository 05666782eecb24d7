"""Log-probabilities of sampled tokens and their top alternatives.

They are `log_softmax` of the model's raw logits: before penalties, bias, temperature and filtering
(what the model believes, not what the sampler did with it). Computed only for rows that asked.
"""

from __future__ import annotations

import torch

from backends.hf.sequence import Sequence
from backends.types import TokenLogprob, TopLogprob


def wants_logprobs(seq: Sequence) -> bool:
    return seq.sampling.logprobs is not None or seq.sampling.best_of is not None


@torch.inference_mode()
def sampled_logprobs(logits: torch.Tensor, seqs: list[Sequence], tokens: list[int],
                     token_text) -> list[TokenLogprob | None]:
    """`token_text(id)` gives a token's text as the API shows it."""
    rows = [i for i, seq in enumerate(seqs) if wants_logprobs(seq)]
    result: list[TokenLogprob | None] = [None] * len(seqs)
    if not rows:
        return result
    if len(rows) < len(seqs):
        logits = logits[rows]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(1, torch.tensor([tokens[i] for i in rows]).unsqueeze(1)).squeeze(1).tolist()
    k = max(seqs[i].sampling.logprobs or 0 for i in rows)
    # One conversion to Python lists for the whole batch: per-row `.tolist()` calls cost more than the topk.
    top_ids: list[list[int]] = []
    top_values: list[list[float]] = []
    if k:
        values, ids = logprobs.topk(k, dim=-1)
        top_ids, top_values = ids.tolist(), values.tolist()
    for j, i in enumerate(rows):
        wanted = seqs[i].sampling.logprobs or 0
        top = [TopLogprob(t, token_text(t), v) for t, v in zip(top_ids[j][:wanted], top_values[j][:wanted],
                                                               strict=True)] if wanted else []
        result[i] = TokenLogprob(tokens[i], token_text(tokens[i]), chosen[j], top)
    return result


@torch.inference_mode()
def prompt_logprobs(seq: Sequence, chunk_logits: torch.Tensor, token_text) -> list[TokenLogprob]:
    """Logprobs of the prompt tokens predicted by this chunk's positions (row i predicts token start+i+1).
    The very first prompt token has no prediction: it gets logprob None."""
    end = seq.num_computed_tokens
    start = end - chunk_logits.shape[0]
    entries: list[TokenLogprob] = []
    if start == 0:
        first = seq.prompt_token_ids[0]
        entries.append(TokenLogprob(first, token_text(first), None))
    last = min(end, seq.num_prompt_tokens - 1)
    if last <= start:
        return entries
    targets = seq.prompt_token_ids[start + 1 : last + 1]
    logprobs = torch.log_softmax(chunk_logits[: len(targets)].float(), dim=-1)
    chosen = logprobs.gather(1, torch.tensor(targets).unsqueeze(1)).squeeze(1).tolist()
    k = seq.sampling.prompt_logprobs or 0
    top_values, top_ids = logprobs.topk(k, dim=-1) if k else (None, None)
    for j, token in enumerate(targets):
        top = []
        if k:
            top = [TopLogprob(t, token_text(t), v) for t, v in zip(top_ids[j].tolist(), top_values[j].tolist(),
                                                                   strict=True)]
        entries.append(TokenLogprob(token, token_text(token), chosen[j], top))
    return entries
