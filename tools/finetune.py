"""Supervised fine-tuning: LoRA, QLoRA (4-bit nf4 base) or full, evaluated before and after on held-out data.

The output is a turnout artifact: for lora/qlora a LoRA adapter (peft files, tokenizer, manifest with
``adapter``) that `turnout tools merge` folds into its base or `turnout serve --lora` serves as is; for
full a complete model. Its manifest lineage is the base's plus this run, with the evaluation as metrics.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from tools.artifact import check_out_dir, require_model_dir, staged_output
from tools.manifest import lineage_entry, parent_record, utc_now, write_manifest
from tools.sft_data import Example, read_jsonl, split_held_out, tokenize_records
from tools.sft_eval import collate, evaluate, padding_id, reply_loss, reply_stop_ids
from tools.training import CosineSchedule, optimizer_steps

METHODS = ("lora", "qlora", "full")
_DEFAULT_LR = {"lora": 2e-3, "qlora": 2e-3, "full": 3e-4}


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune; every field is a command-line option and is recorded in the manifest."""

    method: str = "lora"
    """lora (low-rank adapter), qlora (adapter over a 4-bit nf4 base, bitsandbytes) or full (all weights)."""
    epochs: int = 3
    """Passes over the training records."""
    max_steps: int = 0
    """Stop after this many optimiser steps (0: no limit beyond epochs)."""
    batch_size: int = 16
    """Records per optimiser step."""
    lr: float = 0.0
    """Peak learning rate; 0 picks the method's default (2e-3 for lora/qlora, 3e-4 for full)."""
    warmup_steps: int = 10
    """Linear warm-up steps before the cosine decay (down to a tenth of the peak)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0 disables)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input while training."""
    target_modules: str = "all-linear"
    """Comma-separated module names to adapt, or all-linear (every linear layer but the output head)."""
    max_length: int = 512
    """Records are cut to this many tokens."""
    eval_fraction: float = 0.1
    """Share of records held out for evaluation (ignored with --eval-data)."""
    max_eval: int = 200
    """Evaluate on at most this many held-out records."""
    max_new_tokens: int = 32
    """Longest greedy answer generated for exact match."""
    eval_before: bool = True
    """Also evaluate the base model before training (the 'before' numbers of the report)."""
    seed: int = 0
    """Seeds the split, the shuffling and the adapter initialisation."""
    threads: int = 2
    """torch CPU threads."""

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("epochs", "batch_size", "lora_r", "lora_alpha", "max_length", "max_eval", "max_new_tokens",
                     "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("max_steps", "warmup_steps", "lr", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")

    @property
    def peak_lr(self) -> float:
        return self.lr or _DEFAULT_LR[self.method]


def _targets(config: FinetuneConfig) -> str | list[str]:
    if config.target_modules == "all-linear":
        return "all-linear"
    return [name.strip() for name in config.target_modules.split(",") if name.strip()]


def load_for_training(model_dir: Path, config: FinetuneConfig):
    """The model to train: the plain model (full), or a peft LoRA model over a float or 4-bit base."""
    from transformers import AutoModelForCausalLM

    if config.method == "full":
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    from peft import LoraConfig, get_peft_model

    if config.method == "qlora":
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_compute_dtype=torch.float32)
        base = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quantization, device_map="cpu")
        # bitsandbytes 0.50 repacks 4-bit weights for its AVX512-bf16 CPU kernel on the first inference-mode
        # forward, which fails for layers whose output size is not a multiple of 32 (the bundled model's
        # 688-wide MLP); the plain dequantize-and-matmul path works for every shape.
        for module in base.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    else:
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=_targets(config), task_type="CAUSAL_LM")
    return get_peft_model(base, lora)


def shuffled_batches(examples: list[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """Batches of ``batch_size`` records, endlessly: each epoch a new seeded shuffle (the last batch of
    an epoch may be smaller)."""
    rng = random.Random(seed)
    while True:
        order = list(examples)
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield order[start:start + batch_size]


def train(model, examples: list[Example], config: FinetuneConfig, pad_id: int, show_progress: bool) -> dict:
    """The training loop; returns its summary (steps, seconds, losses)."""
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps:
        total = min(total, config.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.peak_lr, weight_decay=config.weight_decay)
    schedule = CosineSchedule(config.peak_lr, total, config.warmup_steps, floor_ratio=0.1)
    batches = shuffled_batches(examples, config.batch_size, config.seed)

    def mean_reply_loss(step: int) -> torch.Tensor:
        loss_sum, count = reply_loss(model, collate(next(batches), pad_id))
        return loss_sum / max(count, 1)

    losses: list[float] = []
    started = time.monotonic()
    progress = tqdm(total=total, desc=f"finetune ({config.method})", unit="step", disable=not show_progress)
    for _, loss in optimizer_steps(model, optimizer, schedule, mean_reply_loss, total, config.grad_clip or None,
                                   progress=progress):
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
    progress.close()
    model.eval()
    tail = losses[-max(1, steps_per_epoch):]
    return {
        "steps": total,
        "seconds": round(time.monotonic() - started, 1),
        "first_loss": round(losses[0], 4) if losses else None,
        "final_loss": round(sum(tail) / len(tail), 4) if tail else None,
        "trainable_parameters": sum(p.numel() for p in params),
        "total_parameters": sum(p.numel() for p in model.parameters()),
    }


def finetune(model_dir: str | Path, data: str | Path, out: str | Path, config: FinetuneConfig,
             eval_data: str | Path | None = None, command: str = "", show_progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``model_dir`` on ``data`` into ``out``; return the report (also the lineage metrics)."""
    from transformers import AutoTokenizer

    config.validate()
    base_dir = require_model_dir(model_dir, "--model")
    out_dir = check_out_dir(out)
    started_utc, started = utc_now(), time.monotonic()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    train_examples, held_examples = load_examples(tokenizer, data, eval_data, config)
    model = load_for_training(base_dir, config)
    report = train_and_evaluate(model, tokenizer, train_examples, held_examples, config, show_progress)

    arguments = {"model": str(base_dir), "data": str(data),
                 "eval_data": None if eval_data is None else str(eval_data), **asdict(config)}
    entry = lineage_entry("finetune", command, arguments, started_utc, time.monotonic() - started, report)
    _save(out_dir, model, tokenizer, base_dir, config, entry)
    report["out"] = str(out_dir)
    return report


def load_examples(tokenizer, data: str | Path, eval_data: str | Path | None,
                  config: FinetuneConfig) -> tuple[list[Example], list[Example]]:
    """(training examples, held-out examples): ``eval_data``, else a seeded share of ``data``."""
    records = read_jsonl(data)
    if eval_data is not None:
        train_records, held_records = records, read_jsonl(eval_data)
    else:
        train_records, held_records = split_held_out(records, config.eval_fraction, config.seed)
    train_examples = tokenize_records(tokenizer, train_records, config.max_length, str(data))
    held_examples = tokenize_records(tokenizer, held_records[:config.max_eval], config.max_length,
                                     str(eval_data or data))
    return train_examples, held_examples


def train_and_evaluate(model, tokenizer, train_examples: list[Example], held_examples: list[Example],
                       config: FinetuneConfig, show_progress: bool) -> dict[str, Any]:
    """Evaluate the base model (unless ``eval_before`` is off), train, evaluate again; return the report."""
    stops = reply_stop_ids(model, tokenizer)
    pad_id = padding_id(tokenizer, stops)

    def run_eval(stage: str) -> dict:
        if show_progress:
            print(f"evaluating {stage} on {len(held_examples)} held-out records ...", flush=True)
        return evaluate(model, tokenizer, held_examples, stops, pad_id, config.max_new_tokens, show_progress)

    report: dict[str, Any] = {"method": config.method, "train_records": len(train_examples),
                              "held_out_records": len(held_examples)}
    if config.eval_before:
        if config.method == "full":
            report["before"] = run_eval("the base model")
        else:
            with model.disable_adapter():
                report["before"] = run_eval("the base model")
    report["train"] = train(model, train_examples, config, pad_id, show_progress)
    report["after"] = run_eval("the fine-tuned model")
    return report


def _save(out_dir: Path, model, tokenizer, base_dir: Path, config: FinetuneConfig, entry: dict[str, Any]) -> None:
    """Write the model (full) or the adapter (lora, qlora), the tokenizer and the manifest into ``out_dir``."""
    parent_name, parent_lineage = parent_record(base_dir)
    info: dict[str, Any] = {"name": out_dir.name, "base_model": parent_name, "lineage": [*parent_lineage, entry]}
    if config.method != "full":
        info["adapter"] = {
            "type": "lora", "base_model": parent_name, "base_path": str(base_dir.resolve()),
            "method": config.method, "r": config.lora_r, "alpha": config.lora_alpha,
            "dropout": config.lora_dropout, "target_modules": config.target_modules,
            "base_quantization": "bitsandbytes nf4 (training only)" if config.method == "qlora" else None,
        }
    with staged_output(out_dir) as staging:
        if config.method == "full":
            model.save_pretrained(staging, safe_serialization=True)
        else:
            model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_manifest(staging, info)
