"""Held-out perplexity of a model and of a unigram baseline, scored on the same tokens.

A perplexity alone says little about a tiny model on a tiny corpus; next to the perplexity
of "predict each token by its training frequency" it shows whether the model learned context.
Both are scored on ``held_out[1:]`` (every held-out token after the first).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tools.packing import eval_windows


@torch.no_grad()
def model_perplexity(
    model: torch.nn.Module, held_out: torch.Tensor, seq_len: int, batch_size: int = 8
) -> float:
    """exp(mean next-token cross-entropy) over ``held_out[1:]``; the model is left in eval mode."""
    model.eval()
    windows = [w for w in eval_windows(held_out, seq_len) if len(w) >= 2]
    full = [w for w in windows if len(w) == seq_len + 1]
    batches = [torch.stack(full[i : i + batch_size]) for i in range(0, len(full), batch_size)]
    batches += [w[None, :] for w in windows if len(w) < seq_len + 1]  # the ragged last window
    total_nll, total_tokens = 0.0, 0
    for batch in batches:
        logits = model(input_ids=batch[:, :-1]).logits
        targets = batch[:, 1:]
        total_nll += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum").item()
        total_tokens += targets.numel()
    if total_tokens == 0:
        raise ValueError(f"held-out stream of {len(held_out)} tokens has nothing to score")
    return math.exp(total_nll / total_tokens)


def unigram_perplexity(train: torch.Tensor, held_out: torch.Tensor, vocab_size: int) -> float:
    """Perplexity of add-one-smoothed training token frequencies on ``held_out[1:]``."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size!r}")
    if int(train.max()) >= vocab_size or int(held_out.max()) >= vocab_size:
        raise ValueError(f"token id out of range for vocab_size={vocab_size}")
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    log_probs = counts.log() - counts.sum().log()
    targets = held_out[1:]
    if len(targets) == 0:
        raise ValueError(f"held-out stream of {len(held_out)} tokens has nothing to score")
    return math.exp(-log_probs[targets].mean().item())
