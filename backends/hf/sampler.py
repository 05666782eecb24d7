"""Every decoding rule, vectorised over the batch: penalties, bias, temperature, top-k/top-p/min-p/typical
filtering, then one draw per row.

Draws invert the cumulative distribution at one uniform number per row. A row with a seed draws that
number from its own generator, so its tokens do not depend on which other requests share the
batch; a token whose probability is zero (filtered out) has an empty interval and is never drawn. Each stage is skipped when no row in the batch uses it, which keeps the plain
greedy step cheap.
"""

from __future__ import annotations

import random

import torch

from backends.hf.grammar import apply_grammar_masks
from backends.hf.ops import Ops, TorchOps
from backends.hf.sequence import Sequence


def _column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).unsqueeze(1)


class TokenHistory:
    """Each sequence's tokens for the penalties, as rows of two id tables: every token (prompt and output,
    for the repetition penalty) and output tokens only (presence and frequency). Each step appends only the
    new tokens of all rows in one indexed write. The penalties then gather and scatter at these ids, a few
    hundred per row, instead of rewriting the whole [batch, vocab] logits several times.

    Unused cells hold `pad_id`, one past the vocabulary: the penalties work on logits with one spare
    column there, so padding lands in a column that is thrown away."""

    def __init__(self, pad_id: int, rows: int = 64, width: int = 256):
        self.pad_id = pad_id
        self.all_ids = torch.full((rows, width), pad_id, dtype=torch.long)
        self.output_ids = torch.full((rows, width), pad_id, dtype=torch.long)
        self._free = list(range(rows - 1, -1, -1))
        self._row: dict[Sequence, int] = {}
        self._written: dict[Sequence, int] = {}  # tokens of the sequence already in all_ids

    def rows(self, seqs: list[Sequence]) -> tuple[torch.Tensor, int, int]:
        """The rows of these sequences, brought up to date with their tokens so far, and the widths that
        hold every row's tokens: (rows, width of all tokens, width of output tokens)."""
        longest = max(len(seq.token_ids) for seq in seqs)
        if longest > self.all_ids.shape[1]:
            self._widen(longest)
        every: list[tuple[int, int, int]] = []  # new cells of all_ids: (row, column, token)
        output: list[tuple[int, int, int]] = []  # and of output_ids
        rows, all_width, output_width = [], 0, 0
        for seq in seqs:
            row = self._row.get(seq)
            if row is None:
                row = self._assign(seq)
            tokens, prompt_length = seq.token_ids, seq.num_prompt_tokens
            for column in range(self._written[seq], len(tokens)):
                every.append((row, column, tokens[column]))
                if column >= prompt_length:
                    output.append((row, column - prompt_length, tokens[column]))
            self._written[seq] = len(tokens)
            rows.append(row)
            all_width = max(all_width, len(tokens))
            output_width = max(output_width, len(tokens) - prompt_length)
        for table, cells in ((self.all_ids, every), (self.output_ids, output)):
            if cells:
                cell_rows, columns, token_ids = torch.tensor(cells).unbind(1)
                table[cell_rows, columns] = token_ids
        return torch.tensor(rows), all_width, output_width

    def release(self, seq: Sequence) -> None:
        row = self._row.pop(seq, None)
        if row is not None:
            self._written.pop(seq)
            self._free.append(row)

    def _assign(self, seq: Sequence) -> int:
        if not self._free:  # grow: twice the rows
            size = self.all_ids.shape[0]
            self.all_ids = torch.cat([self.all_ids, torch.full_like(self.all_ids, self.pad_id)])
            self.output_ids = torch.cat([self.output_ids, torch.full_like(self.output_ids, self.pad_id)])
            self._free = list(range(2 * size - 1, size - 1, -1))
        row = self._free.pop()
        self.all_ids[row] = self.pad_id
        self.output_ids[row] = self.pad_id
        self._row[seq] = row
        self._written[seq] = 0
        return row

    def _widen(self, needed: int) -> None:
        width = self.all_ids.shape[1]
        while width < needed:
            width *= 2
        pad = width - self.all_ids.shape[1]
        self.all_ids = torch.nn.functional.pad(self.all_ids, (0, pad), value=self.pad_id)
        self.output_ids = torch.nn.functional.pad(self.output_ids, (0, pad), value=self.pad_id)


class Sampler:
    def __init__(self, eos_token_ids: list[int], ops: Ops | None = None):
        """`ops`: the runner's, whose argmax_rows picks greedy tokens (on the C++ kernels, ~8 us against
        torch's ~60 of a ~4 ms decode step at batch 32); None: PyTorch's."""
        self.eos_token_ids = eos_token_ids
        self._ops = ops if ops is not None else TorchOps()
        self._history: TokenHistory | None = None  # made on first use of a penalty

    def release(self, seq: Sequence) -> None:
        """Forget a finished sequence's penalty statistics."""
        if self._history is not None:
            self._history.release(seq)

    @torch.inference_mode()
    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        params = [seq.sampling for seq in seqs]
        logits = self._apply_penalties(logits, seqs)
        logits = apply_grammar_masks(logits, [seq.grammar for seq in seqs])
        if all(p.greedy for p in params):
            return self._ops.argmax_rows(logits).tolist()

        temperatures = [p.temperature if not p.greedy else 1.0 for p in params]
        if any(t != 1.0 for t in temperatures):
            logits = logits / _column(temperatures, logits)
        candidates, ids = self._candidates(logits, params)
        # Draw in token-id order whatever path the batch took, so a seeded row's token does not depend on
        # its neighbours: a few top-k candidates are re-sorted by id; a whole sorted vocabulary is put back.
        if ids is not None and ids.shape[1] < logits.shape[1]:
            ids, order = ids.sort(dim=-1)
            candidates = candidates.gather(1, order)
        elif ids is not None:
            candidates, ids = torch.full_like(logits, float("-inf")).scatter_(1, ids, candidates), None
        probs = torch.softmax(candidates, dim=-1)
        # Inverse-CDF draw: one uniform per row, taken from the row's own generator when it has a seed.
        # A seeded row's generator is Python's random.Random: a draw costs far less than a torch call.
        draws = torch.rand(len(seqs)).tolist()
        for row, seq in enumerate(seqs):
            if seq.sampling.seed is not None:
                if seq.generator is None:
                    seq.generator = random.Random(seq.sampling.seed)
                draws[row] = seq.generator.random()
        uniforms = torch.tensor(draws, dtype=probs.dtype)
        cdf = probs.cumsum(dim=-1)
        targets = (uniforms.unsqueeze(1) * cdf[:, -1:]).clamp_(min=torch.finfo(cdf.dtype).tiny)
        picks = torch.searchsorted(cdf, targets).clamp_(max=probs.shape[-1] - 1)
        sampled = picks.squeeze(1) if ids is None else ids.gather(1, picks).squeeze(1)
        greedy_rows = [row for row, p in enumerate(params) if p.greedy]
        if greedy_rows:
            sampled[greedy_rows] = self._ops.argmax_rows(logits[greedy_rows])
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
        batch, vocab = logits.shape
        # A copy with one spare column: the history tables' padding ids point there.
        padded = torch.empty((batch, vocab + 1), dtype=logits.dtype, device=logits.device)
        padded[:, :vocab] = logits
        padded[:, vocab] = 0.0
        if repetition or additive:
            if self._history is None:
                self._history = TokenHistory(pad_id=vocab)
            rows, all_width, output_width = self._history.rows(seqs)
        if repetition:  # once per distinct token seen: duplicate ids write the same value
            ids = self._history.all_ids[rows, :all_width]
            seen = padded.gather(1, ids)
            penalty = _column([p.repetition_penalty for p in params], logits)
            padded.scatter_(1, ids, torch.where(seen > 0, seen / penalty, seen * penalty))
        if additive and output_width:
            ids = self._history.output_ids[rows, :output_width]
            frequency = _column([p.frequency_penalty for p in params], logits)
            padded.scatter_add_(1, ids, (-frequency).expand(ids.shape))  # once per occurrence
            presence = _column([p.presence_penalty for p in params], logits)
            padded.scatter_(1, ids, padded.gather(1, ids) - presence)  # once per distinct token
        logits = padded[:, :vocab]
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
    def _candidates(logits: torch.Tensor, params) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Top-k, then top-p, then min-p, then typical-p, each on what the previous left (transformers'
        order, each renormalised). Returns candidate logits sorted most likely first and their token ids:
        the top max(k) when every row has a top_k (cheap), else the whole sorted vocabulary; with no
        filter at all, the logits themselves and ids None. A row samples the same token either way."""
        use_top_p = any(p.top_p < 1.0 for p in params)
        use_min_p = any(p.min_p > 0.0 for p in params)
        use_typical = any(p.typical_p < 1.0 for p in params)
        vocab = logits.shape[-1]
        ks = [p.top_k if 0 < p.top_k < vocab else vocab for p in params]
        if not (use_top_p or use_min_p or use_typical or min(ks) < vocab):
            return logits, None
        width = max(ks)
        if width < vocab:
            candidates, ids = logits.topk(width, dim=-1)
        else:
            candidates, ids = logits.sort(dim=-1, descending=True)
        ranks = torch.arange(width).unsqueeze(0)
        candidates = candidates.masked_fill(ranks >= torch.tensor(ks).unsqueeze(1), float("-inf"))
        if use_top_p:
            probs = torch.softmax(candidates, dim=-1)
            top_p = _column([p.top_p if p.top_p < 1.0 else 2.0 for p in params], logits)
            # Drop a token when the mass strictly before it already reaches top_p (the first always stays).
            candidates = candidates.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, float("-inf"))
        if use_min_p:
            probs = torch.softmax(candidates, dim=-1)
            min_p = _column([p.min_p for p in params], logits)
            candidates = candidates.masked_fill(probs < min_p * probs[:, :1], float("-inf"))
        if use_typical:
            typical_p = _column([p.typical_p for p in params], logits)
            candidates = candidates.masked_fill(_typical_drop(candidates, typical_p), float("-inf"))
        return candidates, ids


def _typical_drop(candidates: torch.Tensor, typical_p: torch.Tensor) -> torch.Tensor:
    """transformers' TypicalLogitsWarper: keep the tokens whose surprise is closest to the entropy until
    their mass reaches typical_p (rows with typical_p = 1 keep everything)."""
    logp = torch.log_softmax(candidates, dim=-1)
    probs = logp.exp()
    entropy = -(probs * logp.nan_to_num(neginf=0.0)).sum(dim=-1, keepdim=True)
    gap = (-logp - entropy).abs().nan_to_num(posinf=float("inf"))
    gap_sorted, gap_order = gap.sort(dim=-1)
    probs_by_gap = probs.gather(1, gap_order)
    drop_by_gap = (probs_by_gap.cumsum(dim=-1) - probs_by_gap >= typical_p) & (typical_p < 1.0)
    return torch.zeros_like(drop_by_gap).scatter_(1, gap_order, drop_by_gap)
