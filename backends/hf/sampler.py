"""Every decoding rule, vectorised over the batch: penalties, bias, temperature, top-k/top-p/min-p/typical
filtering, then one draw per row.

Draws use the exponential race (argmax of p / E with E ~ Exp(1)), which equals sampling from p. A row
with a seed draws its noise from its own torch.Generator, so its tokens do not depend on which other
requests share the batch. Each stage is skipped when no row in the batch uses it, which keeps the plain
greedy step cheap.
"""

from __future__ import annotations

import torch

from backends.hf.grammar import apply_grammar_masks
from backends.hf.sequence import Sequence


def _column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).unsqueeze(1)


def _token_counts(rows: list[list[int]], vocab: int) -> torch.Tensor:
    """[len(rows), vocab] occurrence counts, built in one scatter from a padded id matrix."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.tensor([r + [vocab] * (width - len(r)) for r in rows], dtype=torch.long).clamp_(max=vocab)
    counts = torch.zeros((len(rows), vocab + 1), dtype=torch.int32)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.int32))
    return counts[:, :vocab]


class Sampler:
    def __init__(self, eos_token_ids: list[int]):
        self.eos_token_ids = eos_token_ids

    @torch.inference_mode()
    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        params = [seq.sampling for seq in seqs]
        logits = self._apply_penalties(logits, seqs)
        logits = apply_grammar_masks(logits, [seq.grammar for seq in seqs])
        if all(p.greedy for p in params):
            return logits.argmax(dim=-1).tolist()

        temperatures = [p.temperature if not p.greedy else 1.0 for p in params]
        if any(t != 1.0 for t in temperatures):
            logits = logits / _column(temperatures, logits)
        logits = self._filter(logits, params)
        probs = torch.softmax(logits, dim=-1)
        noise = torch.empty_like(probs)
        for row, seq in enumerate(seqs):
            if seq.sampling.seed is not None and seq.generator is None:
                seq.generator = torch.Generator().manual_seed(seq.sampling.seed)
            noise[row].exponential_(generator=seq.generator)
        sampled = (probs / noise).argmax(dim=-1)
        greedy_rows = [row for row, p in enumerate(params) if p.greedy]
        if greedy_rows:
            sampled[greedy_rows] = logits[greedy_rows].argmax(dim=-1)
        return sampled.tolist()

    def _apply_penalties(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """Repetition, presence and frequency penalties, logit bias and min_tokens, for the rows using them."""
        params = [seq.sampling for seq in seqs]
        repetition = any(p.repetition_penalty != 1.0 for p in params)
        additive = any(p.presence_penalty or p.frequency_penalty for p in params)
        bias = any(p.logit_bias for p in params)
        min_tokens = any(seq.num_output_tokens < seq.sampling.min_tokens for seq in seqs)
        if not (repetition or additive or bias or min_tokens):
            return logits
        logits = logits.clone()
        vocab = logits.shape[-1]
        if repetition:
            penalty = _column([p.repetition_penalty for p in params], logits)
            seen = _token_counts([seq.token_ids for seq in seqs], vocab) > 0
            penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
            logits = torch.where(seen, penalised, logits)
        if additive:
            counts = _token_counts([seq.output_token_ids for seq in seqs], vocab).to(logits.dtype)
            logits -= _column([p.frequency_penalty for p in params], logits) * counts
            logits -= _column([p.presence_penalty for p in params], logits) * (counts > 0).to(logits.dtype)
        for row, seq in enumerate(seqs):
            p = seq.sampling
            if p.logit_bias:
                ids = torch.tensor(list(p.logit_bias), dtype=torch.long)
                logits[row, ids] += torch.tensor(list(p.logit_bias.values()), dtype=logits.dtype)
            if seq.num_output_tokens < p.min_tokens:
                banned = [t for t in (*self.eos_token_ids, *p.stop_token_ids) if t < vocab]
                logits[row, banned] = float("-inf")
        return logits

    @staticmethod
    def _filter(logits: torch.Tensor, params) -> torch.Tensor:
        """Top-k, top-p, min-p and typical-p, each as a mask of tokens to drop (set to -inf)."""
        use_top_k = any(p.top_k > 0 for p in params)
        use_top_p = any(p.top_p < 1.0 for p in params)
        use_min_p = any(p.min_p > 0.0 for p in params)
        use_typical = any(p.typical_p < 1.0 for p in params)
        if not (use_top_k or use_top_p or use_min_p or use_typical):
            return logits
        vocab = logits.shape[-1]
        drop = torch.zeros_like(logits, dtype=torch.bool)
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        if use_top_k:
            k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params]).clamp(max=vocab)
            ranks = torch.arange(vocab).unsqueeze(0)
            drop.scatter_(1, order, ranks >= k.unsqueeze(1))
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        if use_top_p:
            top_p = _column([p.top_p for p in params], logits)
            # Drop a token when the mass strictly before it already reaches top_p (the first always stays).
            mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
            drop |= torch.zeros_like(drop).scatter_(1, order, mass_before >= top_p)
        if use_min_p:
            min_p = _column([p.min_p for p in params], logits)
            drop |= torch.zeros_like(drop).scatter_(1, order, sorted_probs < min_p * sorted_probs[:, :1])
        if use_typical:
            drop |= Sampler._typical_mask(sorted_probs, order, _column([p.typical_p for p in params], logits))
        return logits.masked_fill(drop, float("-inf"))

    @staticmethod
    def _typical_mask(sorted_probs, order, typical_p):
        """HF's TypicalLogitsWarper: keep tokens closest to the entropy until their mass reaches typical_p."""
        logp = torch.log(sorted_probs.clamp_min(1e-30))
        entropy = -(sorted_probs * logp).sum(dim=-1, keepdim=True)
        surprise_gap = (-logp - entropy).abs()
        gap_sorted, gap_order = surprise_gap.sort(dim=-1)
        probs_by_gap = sorted_probs.gather(1, gap_order)
        mass_before = probs_by_gap.cumsum(dim=-1) - probs_by_gap
        drop_by_gap = mass_before >= typical_p
        drop_sorted = torch.zeros_like(drop_by_gap).scatter_(1, gap_order, drop_by_gap)
        return torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
