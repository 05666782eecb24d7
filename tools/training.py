"""The training loop and learning-rate schedule that pretrain, distill and finetune share.

Every optimiser step is the same: set the step's learning rate, compute the batch's loss (each tool
brings its own), backpropagate, clip the gradient norm, step and clear the gradients. What happens
between steps (evaluation, keeping the best weights, early stopping) is the caller's: the loop yields
after each step, and the caller leaves its ``for`` to stop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CosineSchedule:
    """Linear warmup from ``peak_lr / warmup_steps`` to ``peak_lr``, then cosine decay to
    ``peak_lr * floor_ratio`` at ``total_steps`` (and flat after it)."""

    peak_lr: float
    total_steps: int
    warmup_steps: int
    floor_ratio: float

    def lr(self, step: int) -> float:
        """The learning rate of step ``step``, counted from 0."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return self.peak_lr * (self.floor_ratio + (1 - self.floor_ratio) * cosine)


def adamw_without_decay_on_vectors(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW that decays the weight matrices but not the norms and biases (decaying a norm's gain
    towards 0 only fights the model), with the betas small-model pretraining uses."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )


def bf16_autocast(enabled: bool) -> torch.autocast:
    """bfloat16 forward passes on CPU (weights stay fp32), or a no-op when not ``enabled``."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def optimizer_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: CosineSchedule,
    batch_loss: Callable[[int], torch.Tensor],
    steps: int,
    grad_clip: float | None,
    deadline: float = math.inf,
    progress=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Run up to ``steps`` optimiser steps, yielding ``(steps done, that step's loss)`` after each.

    ``batch_loss(step)`` computes step ``step``'s loss (counted from 0) with the model in training
    mode. ``grad_clip`` None: no clipping. No step starts at or after ``deadline`` (a
    ``time.monotonic()`` value). ``progress`` (a tqdm bar) advances by one per step.
    """
    for step in range(steps):
        if time.monotonic() >= deadline:
            return
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr(step)
        model.train()  # the caller's evaluations between steps leave it in eval mode
        loss = batch_loss(step)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if progress is not None:
            progress.update(1)
        yield step + 1, loss
