"""Beam search as one group of `beam_width` sequences decoding in lockstep inside the ordinary batch.

The rules follow transformers' `generate(num_beams=k, do_sample=False)` exactly, so both give the same
output: beam scores are summed `log_softmax` of the raw logits; each step keeps the best
`max(2, 1 + #eos) * k` candidates; a candidate that ends in EOS (or reaches max_tokens) and ranks within the
first k joins the finished set with score `sum_logprob / generated_len ** length_penalty`; the best k
unfinished candidates run on. The search ends when every candidate is finished, when `early_stopping`
and k hypotheses are done, or when no running beam can still beat the worst finished one.

A beam that takes over another's place inherits its KV cache by a slot copy, so nothing is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from backends.hf.sequence import Sequence

_NEG = -1.0e9


@dataclass
class Hypothesis:
    score: float
    token_ids: list[int]
    ended_with_eos: bool


@dataclass
class BeamGroup:
    beams: list[Sequence]
    eos_token_ids: list[int]
    max_tokens: int
    length_penalty: float = 1.0
    early_stopping: bool = False
    running_scores: torch.Tensor = field(init=False)
    finished: list[Hypothesis] = field(default_factory=list)
    pending: dict[int, torch.Tensor] = field(default_factory=dict)
    done: bool = False

    def __post_init__(self) -> None:
        self.running_scores = torch.full((len(self.beams),), _NEG)
        self.running_scores[0] = 0.0  # all beams start as copies of the prompt: only one may expand

    @property
    def width(self) -> int:
        return len(self.beams)

    def offer(self, seq: Sequence, logits: torch.Tensor) -> bool:
        """Hold one beam's next-token logits; True when every beam's are in and the group can step."""
        self.pending[self.beams.index(seq)] = logits
        return len(self.pending) == self.width

    def step(self) -> list[int]:
        """Advance every beam by one token. Returns, for each beam position, the index of the beam whose
        tokens (and KV cache) it continues; the caller copies cache slots accordingly."""
        k = self.width
        logits = torch.stack([self.pending[i] for i in range(k)]).float()
        self.pending.clear()
        vocab = logits.shape[-1]
        scores = (torch.log_softmax(logits, dim=-1) + self.running_scores[:, None]).reshape(-1)
        keep = max(2, 1 + len(self.eos_token_ids)) * k
        top_scores, top_indices = torch.topk(scores, k=keep)
        parents = (top_indices // vocab).tolist()
        tokens = (top_indices % vocab).tolist()
        generated = self.beams[0].num_output_tokens + 1  # every beam has the same length
        at_limit = generated >= self.max_tokens
        hits = [at_limit or t in self.eos_token_ids for t in tokens]

        self._add_finished(top_scores.tolist(), parents, tokens, hits, generated)
        running = [j for j in range(keep) if not hits[j]][:k]
        old_tokens = [list(b.token_ids) for b in self.beams]
        new_scores = torch.full((k,), _NEG)
        sources = []
        for slot, j in enumerate(running):
            self.beams[slot].token_ids = old_tokens[parents[j]] + [tokens[j]]
            new_scores[slot] = top_scores[j]
            sources.append(parents[j])
        # When fewer than k candidates can run on (all hit a stop), the rest keep -inf scores.
        for slot in range(len(running), k):
            self.beams[slot].token_ids = old_tokens[0] + [tokens[0]]
            sources.append(0)
        self.running_scores = new_scores
        self.done = all(hits) or self._nothing_to_gain(generated)
        return sources

    def _add_finished(self, scores, parents, tokens, hits, generated: int) -> None:
        k = self.width
        full = len(self.finished) == k
        if full and self.early_stopping:
            return
        old_tokens = [b.token_ids for b in self.beams]
        for j in range(k):  # only candidates ranked within the first k may finish
            if hits[j]:
                score = scores[j] / (generated ** self.length_penalty)
                self.finished.append(Hypothesis(score, old_tokens[parents[j]] + [tokens[j]],
                                                tokens[j] in self.eos_token_ids))
        self.finished.sort(key=lambda h: h.score, reverse=True)
        del self.finished[k:]

    def _nothing_to_gain(self, generated: int) -> bool:
        if len(self.finished) < self.width:
            return False
        if self.early_stopping:
            return True
        best_running = float(self.running_scores[0]) / (generated ** self.length_penalty)
        return best_running <= self.finished[-1].score

    def results(self, n: int) -> list[Hypothesis]:
        return self.finished[:n]
