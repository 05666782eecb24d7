"""``turnout tools dpo``: preference-tune a model with DPO (trl's DPOTrainer), LoRA or full.

Input is JSONL with ``prompt``, ``chosen`` and ``rejected`` (strings, rendered as a one-turn chat with
the model's own chat template, or lists of chat messages). Held-out preference accuracy (see
tools/preference_eval.py) is measured before and after; LoRA weights are merged into the saved model,
so the artifact loads anywhere a plain model loads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tools import derived
from tools.artifact import check_out_dir, require_model_dir, staged_output
from tools.manifest import utc_now
from tools.options import add_fields, from_args


@dataclass(frozen=True)
class DPOOptions:
    """DPO training settings."""

    steps: int = 60
    """Optimiser steps."""
    batch_size: int = 8
    """Preference pairs per step."""
    lr: float = 5e-4
    """Peak learning rate (LoRA wants a larger one than full fine-tuning)."""
    beta: float = 0.1
    """DPO temperature: how far the policy may move from the reference."""
    sft_weight: float = 0.0
    """Weight of an added negative log-likelihood term on the chosen replies (RPO-style; 0: pure DPO).
    It keeps free generation fluent while the preference margin grows."""
    lora: bool = True
    """Train LoRA adapters (merged into the saved model) instead of every weight."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    max_length: int = 256
    """Longest prompt + completion in tokens; longer pairs are truncated."""
    seed: int = 0
    """Seeds the adapter init and the data order."""
    threads: int = 2
    """torch intra-op threads."""

    def validate(self) -> None:
        for name in ("steps", "batch_size", "lora_r", "lora_alpha", "max_length", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")
        if self.sft_weight < 0:
            raise ValueError(f"sft_weight must be >= 0, got {self.sft_weight!r}")


PAIR_FIELDS = ("prompt", "chosen", "rejected")


def run_dpo(
    model_dir: str | Path,
    data: str | Path,
    held_out: str | Path | None,
    out: str | Path,
    options: DPOOptions,
    command: str = "",
    show_progress: bool = True,
) -> dict:
    """Train, save a merged model with tokenizer and manifest into ``out``; return the JSON report."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tools.preference_eval import preference_accuracy, preference_scores

    options.validate()
    parent = require_model_dir(model_dir)
    train_rows = derived.read_jsonl(data, PAIR_FIELDS)
    eval_rows = derived.read_jsonl(held_out, PAIR_FIELDS) if held_out else train_rows
    check_out_dir(out)
    started, started_utc = time.monotonic(), utc_now()
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)

    tokenizer = AutoTokenizer.from_pretrained(parent)
    model = AutoModelForCausalLM.from_pretrained(parent, dtype=torch.float32)
    reference_scores = preference_scores(model, tokenizer, eval_rows)
    before = preference_accuracy(model, tokenizer, eval_rows)
    trained, history = train_dpo(model, tokenizer, train_rows, options, show_progress)
    after = preference_accuracy(trained, tokenizer, eval_rows, reference_scores, options.beta)

    metrics = {"held_out_before": before, "held_out_after": after, "loss_history": history}
    arguments = {"model": str(model_dir), "data": str(data), "held_out": str(held_out), **asdict(options)}
    with staged_output(out) as out_dir:
        trained.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        derived.copy_tokenizer_files(parent, out_dir)
        manifest = derived.write_derived_manifest(
            out_dir, parent, name=Path(out).name, tool="dpo", command=command, arguments=arguments,
            started_utc=started_utc, started=started, metrics=metrics,
        )
    return {"out": str(Path(out).resolve()), "name": manifest["name"], **metrics}


def train_dpo(model, tokenizer, rows: list[dict], options: DPOOptions, show_progress: bool) -> tuple[object, list]:
    """Train with trl's DPOTrainer (its warmup-cosine schedule is the transformers one); return the trained
    model, LoRA merged, in eval mode, and the losses the trainer logged."""
    from datasets import Dataset
    from trl import DPOTrainer

    from tools.preference_eval import as_conversation

    peft_config = _lora_config(options) if options.lora else None
    with tempfile.TemporaryDirectory(prefix="turnout-dpo-") as scratch:
        config = _dpo_config(options, scratch, show_progress)
        dataset = Dataset.from_list([as_conversation(row) for row in rows])
        trainer = DPOTrainer(
            model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
        )
        trainer.train()
        history = [
            {"step": e["step"], "loss": round(e["loss"], 4)} for e in trainer.state.log_history if "loss" in e
        ]
        trained = trainer.model
    if options.lora:
        trained = trained.merge_and_unload()
    trained.eval()
    return trained, history


def _lora_config(options: DPOOptions):
    from peft import LoraConfig

    return LoraConfig(
        r=options.lora_r, lora_alpha=options.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def _dpo_config(options: DPOOptions, scratch: str, show_progress: bool):
    """trl's settings for our options: CPU, no checkpoints (``scratch`` is thrown away), loss logged ~10 times."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=scratch,
        max_steps=options.steps,
        per_device_train_batch_size=options.batch_size,
        learning_rate=options.lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, options.steps // 10),
        beta=options.beta,
        loss_type=["sigmoid", "sft"] if options.sft_weight else ["sigmoid"],
        loss_weights=[1.0, options.sft_weight] if options.sft_weight else None,
        max_length=options.max_length,
        logging_steps=max(1, options.steps // 10),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=options.seed,
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dpo",
        help="preference-tune a model with DPO (LoRA or full) on prompt/chosen/rejected JSONL",
        description="Direct preference optimisation with trl's DPOTrainer. Held-out preference accuracy "
        "(share of pairs whose chosen completion has a higher summed log-probability than the rejected "
        "one under the model) is measured before and after; the trained model (LoRA merged) is saved "
        "with tokenizer, chat template and a manifest whose lineage extends the parent's.",
    )
    parser.add_argument("--model", type=Path, required=True, help="parent model directory")
    parser.add_argument("--data", type=Path, required=True, help="training JSONL: prompt, chosen, rejected")
    parser.add_argument(
        "--held-out", type=Path, default=None, help="held-out JSONL for the accuracy (default: the training data)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced if an artifact)")
    parser.add_argument("--report", type=Path, default=None, help="also write the JSON report to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_fields(parser, DPOOptions, "training")
    parser.set_defaults(run=_main)


def _main(args: argparse.Namespace, command: str) -> int:
    result = run_dpo(
        args.model, args.data, args.held_out, args.out, from_args(DPOOptions, args), command, not args.quiet
    )
    derived.report(args.report, result)
    return 0
