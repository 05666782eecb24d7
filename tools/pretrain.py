"""Pretrain a tiny Llama on the packed corpus, keeping the checkpoint with the best held-out loss.

The corpus is ~100k tokens, so a few-million-parameter model overfits within minutes; the
loop evaluates on held-out topics every ``eval_every`` steps, keeps the best weights in memory
and stops early when held-out perplexity stops improving. It also stops at a wall-clock budget,
so the default model always builds in bounded time on a 2-core machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM

from tools.evaluate import model_perplexity
from tools.packing import sample_batch
from tools.training import CosineSchedule, adamw_without_decay_on_vectors, bf16_autocast, optimizer_steps


@dataclass(frozen=True)
class ModelShape:
    """Architecture of the Llama to train."""

    hidden_size: int = 256
    """Width of the residual stream (and of the tied embedding)."""
    num_layers: int = 4
    """Number of transformer blocks."""
    num_heads: int = 4
    """Attention heads per block (no grouped-query sharing at this size)."""
    intermediate_size: int = 688
    """Width of the SwiGLU feed-forward layer (~8/3 of hidden_size)."""
    max_position_embeddings: int = 1024
    """The context length the server will advertise."""
    attention_dropout: float = 0.1
    """Dropout on attention weights while training (inactive at inference); fights overfitting."""

    def validate(self) -> None:
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.attention_dropout < 1:
            raise ValueError(f"attention_dropout must be in [0, 1), got {self.attention_dropout!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    def llama_config(self, vocab_size: int, eos_id: int) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=True,
            attention_dropout=self.attention_dropout,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )


@dataclass(frozen=True)
class PretrainConfig:
    """Optimisation settings. Defaults fit the default model into ~12 minutes on 2 CPU cores."""

    steps: int = 1000
    """Upper bound on optimiser steps; the cosine schedule is laid out over this many."""
    max_minutes: float = 12.0
    """Wall-clock budget for the training loop: a hard stop (the best checkpoint so far is kept).
    It does not bend the schedule, so a build is reproducible whatever the machine's load."""
    batch_size: int = 8
    """Windows per optimiser step."""
    seq_len: int = 256
    """Tokens per training window (and per held-out evaluation window)."""
    lr: float = 2e-3
    """Peak learning rate of AdamW."""
    min_lr_ratio: float = 0.1
    """The cosine schedule ends at ``lr * min_lr_ratio``."""
    warmup_steps: int = 100
    """Steps of linear warmup from ~0 to ``lr``."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices (not on norms)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this."""
    eval_every: int = 25
    """Steps between held-out evaluations (each one may save a new best checkpoint)."""
    patience: int = 10
    """Stop after this many evaluations without a new best held-out loss."""
    seed: int = 0
    """Seeds the weight init and the window sampler."""
    threads: int = 2
    """torch intra-op threads."""
    bf16_autocast: bool = True
    """Run forward/backward in bfloat16 (weights stay fp32); ~1.8x faster on AVX-512 BF16 CPUs."""

    def validate(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "eval_every", "patience", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes!r}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")

    def schedule(self) -> CosineSchedule:
        return CosineSchedule(self.lr, self.steps, self.warmup_steps, self.min_lr_ratio)


@dataclass
class PretrainResult:
    """What the loop did; goes into the manifest."""

    model: LlamaForCausalLM
    best_step: int
    best_held_out_perplexity: float
    steps_done: int
    tokens_seen: int
    """Training tokens processed by the whole loop."""
    tokens_seen_at_best: int
    """Training tokens processed by the saved (best) checkpoint."""
    seconds: float
    stop_reason: str
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """Everything but the model, JSON-ready."""
        return {k: v for k, v in self.__dict__.items() if k != "model"}


@dataclass
class _HeldOutRecord:
    """The held-out evaluations so far, and the best one: its step, perplexity and weights."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_perplexity: float = math.inf
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    evals_without_gain: int = 0

    def add(self, model: torch.nn.Module, step: int, train_loss: float, perplexity: float) -> None:
        self.history.append(
            {"step": step, "train_loss": round(train_loss, 4), "held_out_perplexity": round(perplexity, 3)}
        )
        if perplexity < self.best_perplexity:
            self.best_perplexity, self.best_step, self.evals_without_gain = perplexity, step, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.evals_without_gain += 1


def pretrain(
    shape: ModelShape,
    config: PretrainConfig,
    train: torch.Tensor,
    held_out: torch.Tensor,
    vocab_size: int,
    eos_id: int,
    show_progress: bool = True,
) -> PretrainResult:
    """Train from a seeded random init and return the model holding the best held-out weights."""
    _check_fits(shape, config)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(shape.llama_config(vocab_size, eos_id))
    optimizer = adamw_without_decay_on_vectors(model, config.lr, config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)

    def window_loss(step: int) -> torch.Tensor:
        inputs, targets = sample_batch(train, config.batch_size, config.seq_len, generator)
        with bf16_autocast(config.bf16_autocast):
            logits = model(input_ids=inputs).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    start = time.monotonic()
    record = _HeldOutRecord()
    steps_done, stop_reason = _train_until_stop(model, optimizer, window_loss, held_out, config, record, start,
                                                show_progress)
    _keep_the_best(model, record, held_out, config.seq_len, steps_done)
    return PretrainResult(
        model=model,
        best_step=record.best_step,
        best_held_out_perplexity=round(record.best_perplexity, 3),
        steps_done=steps_done,
        tokens_seen=steps_done * config.batch_size * config.seq_len,
        tokens_seen_at_best=record.best_step * config.batch_size * config.seq_len,
        seconds=round(time.monotonic() - start, 1),
        stop_reason=stop_reason,
        history=record.history,
    )


def _keep_the_best(model, record: _HeldOutRecord, held_out: torch.Tensor, seq_len: int, steps_done: int) -> None:
    """Put the best evaluated weights back into ``model`` (left in eval mode)."""
    if record.best_state is None:  # stopped before the first evaluation: score what we have
        record.best_perplexity = model_perplexity(model, held_out, seq_len)
        record.best_step = steps_done
    else:
        model.load_state_dict(record.best_state)
    model.eval()


def _check_fits(shape: ModelShape, config: PretrainConfig) -> None:
    shape.validate()
    config.validate()
    if config.seq_len > shape.max_position_embeddings:
        raise ValueError(
            f"seq_len {config.seq_len} exceeds max_position_embeddings {shape.max_position_embeddings}"
        )


def _train_until_stop(model, optimizer, window_loss, held_out: torch.Tensor, config: PretrainConfig,
                      record: _HeldOutRecord, start: float, show_progress: bool) -> tuple[int, str]:
    """Train, evaluating every ``eval_every`` steps into ``record``; return (steps done, why it stopped)."""
    deadline = start + config.max_minutes * 60.0
    bar = tqdm(total=config.steps, desc="pretrain", disable=not show_progress, dynamic_ncols=True)
    steps_done, stop_reason = 0, "steps"
    for steps_done, loss in optimizer_steps(model, optimizer, config.schedule(), window_loss, config.steps,
                                            config.grad_clip, deadline, bar):
        if steps_done % config.eval_every and steps_done != config.steps:
            continue
        ppl = model_perplexity(model, held_out, config.seq_len)
        record.add(model, steps_done, loss.item(), ppl)
        bar.set_postfix(loss=f"{loss.item():.3f}", held_out_ppl=f"{ppl:.1f}", best=f"{record.best_perplexity:.1f}")
        if record.evals_without_gain >= config.patience:
            stop_reason = "early_stop"
            break
    else:
        if steps_done < config.steps:  # the loop reached the deadline
            stop_reason = "max_minutes"
    bar.close()
    return steps_done, stop_reason
