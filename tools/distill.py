"""``turnout tools distill``: train a smaller student against a teacher's logits.

The loss mixes the soft-target term of Hinton et al. (KL divergence between the teacher's and the
student's distributions at temperature T, times T^2 so its gradients keep their scale) with the
ordinary next-token cross entropy: ``alpha * T^2 * KL + (1 - alpha) * CE``. ``--alpha 0`` is plain
hard-label training with the same code, data, steps and seed: the baseline a distilled student must beat.
The student is scored on the held-out split the teacher's manifest records (or the default split).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tools import derived
from tools.artifact import check_out_dir, require_model_dir, staged_output
from tools.manifest import utc_now
from tools.options import add_fields, from_args


@dataclass(frozen=True)
class StudentShape:
    """The student's shape; 0 means derived from the teacher."""

    layers: int = 0
    """Transformer blocks (0: half the teacher's, at least 1)."""
    hidden_size: int = 0
    """Residual width (0: half the teacher's)."""
    heads: int = 0
    """Attention heads (0: keep the teacher's head size)."""
    intermediate_size: int = 0
    """Feed-forward width (0: the teacher's ratio to hidden_size, rounded up to a multiple of 32)."""


@dataclass(frozen=True)
class DistillOptions:
    """Distillation settings."""

    alpha: float = 0.5
    """Weight of the soft-target (KL) term; 0 trains on hard labels only (the baseline)."""
    temperature: float = 2.0
    """Softmax temperature of both distributions in the KL term."""
    steps: int = 300
    """Optimiser steps."""
    batch_size: int = 8
    """Windows per step."""
    seq_len: int = 256
    """Tokens per training window."""
    lr: float = 3e-3
    """Peak AdamW learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine schedule ends at lr * min_lr_ratio."""
    warmup_steps: int = 30
    """Linear warmup steps."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices."""
    eval_every: int = 50
    """Steps between held-out evaluations (recorded; the final weights are saved)."""
    seed: int = 0
    """Seeds the student init and the window sampler (the same for every alpha)."""
    threads: int = 2
    """torch intra-op threads."""
    bf16_autocast: bool = True
    """Run teacher and student forward passes in bfloat16 autocast (weights stay fp32)."""

    def validate(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        for name in ("steps", "batch_size", "seq_len", "eval_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr!r}")


def student_config(teacher_config, shape: StudentShape, config_file: Path | None = None):
    """The student's config: from ``config_file`` if given, else the teacher's with a smaller shape."""
    from transformers import AutoConfig

    if config_file is not None:
        config = AutoConfig.from_pretrained(config_file)
        if config.vocab_size != teacher_config.vocab_size:
            raise ValueError(f"student vocab_size {config.vocab_size} != teacher's {teacher_config.vocab_size}")
        return config
    if min(asdict(shape).values()) < 0:
        raise ValueError(f"student shape values must be >= 0, got {shape}")
    config = teacher_config.__class__.from_dict(teacher_config.to_dict())
    t_hidden, t_heads = teacher_config.hidden_size, teacher_config.num_attention_heads
    head_dim = getattr(teacher_config, "head_dim", None) or t_hidden // t_heads
    hidden = shape.hidden_size or max(t_hidden // 2, head_dim)
    heads = shape.heads or max(1, hidden // head_dim)
    if hidden % heads:
        raise ValueError(f"hidden_size {hidden} is not divisible by heads {heads}")
    ratio = teacher_config.intermediate_size / t_hidden
    config.hidden_size = hidden
    config.num_attention_heads = config.num_key_value_heads = heads
    config.head_dim = hidden // heads
    config.num_hidden_layers = shape.layers or max(1, teacher_config.num_hidden_layers // 2)
    config.intermediate_size = shape.intermediate_size or 32 * math.ceil(ratio * hidden / 32)
    return config


def distill_loss(student_logits, teacher_logits, targets, alpha: float, temperature: float):
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, targets)``, per token mean."""
    import torch.nn.functional as F

    student_logits = student_logits.flatten(0, 1).float()
    hard = F.cross_entropy(student_logits, targets.flatten())
    if alpha == 0:
        return hard
    teacher_log_probs = F.log_softmax(teacher_logits.flatten(0, 1).float() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    soft = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="batchmean")
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def _text_stream(tokenizer, data: Path):
    from tools.packing import token_stream

    rows = derived.read_jsonl(data, ("text",))
    return token_stream(tokenizer, [row["text"] for row in rows], tokenizer.eos_token_id)


def run_distill(
    teacher_dir: str | Path,
    out: str | Path,
    options: DistillOptions,
    shape: StudentShape = StudentShape(),
    config_file: Path | None = None,
    data: Path | None = None,
    command: str = "",
    show_progress: bool = True,
) -> dict:
    """Distill into ``out`` (model, tokenizer, manifest); return the JSON report."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options.validate()
    parent = require_model_dir(teacher_dir)
    check_out_dir(out)
    started, started_utc = time.monotonic(), utc_now()
    torch.set_num_threads(options.threads)
    tokenizer = AutoTokenizer.from_pretrained(parent)
    teacher = AutoModelForCausalLM.from_pretrained(parent, dtype=torch.float32).eval()
    corpus_train, held_out, eval_len = derived.corpus_streams(tokenizer, parent)
    train = _text_stream(tokenizer, data) if data is not None else corpus_train
    student = new_student(teacher.config, len(tokenizer), shape, config_file, options.seed)
    history = train_student(student, teacher, train, held_out, eval_len, options, show_progress)

    arguments = {
        "teacher": str(teacher_dir),
        "data": str(data) if data else "corpus",
        "student_config": str(config_file) if config_file else None,
        **asdict(shape),
        **asdict(options),
    }
    run = {"command": command, "arguments": arguments, "started_utc": started_utc, "started": started}
    with staged_output(out) as out_dir:
        metrics = _save_and_score(out_dir, parent, student, teacher, held_out, eval_len)
        metrics["history"] = history
        student_shape = _write_manifest(out_dir, parent, Path(out).name, student, metrics, run)
    return {"out": str(Path(out).resolve()), "student": student_shape, **metrics}


def new_student(teacher_config, tokenizer_size: int, shape: StudentShape, config_file: Path | None, seed: int):
    """A randomly initialised student (seeded), without attention dropout."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = student_config(teacher_config, shape, config_file)
    config.attention_dropout = 0.0
    student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if config.vocab_size < tokenizer_size:
        raise ValueError(f"student vocab_size {config.vocab_size} is smaller than the tokenizer's {tokenizer_size}")
    return student


def train_student(student, teacher, train, held_out, eval_len: int, options: DistillOptions,
                  show_progress: bool) -> list[dict]:
    """Train ``student`` on ``train`` windows against ``teacher``; return the held-out evaluations."""
    import torch
    from tqdm import tqdm

    from tools.evaluate import model_perplexity
    from tools.packing import sample_batch
    from tools.training import CosineSchedule, adamw_without_decay_on_vectors, bf16_autocast, optimizer_steps

    optimizer = adamw_without_decay_on_vectors(student, options.lr, options.weight_decay)
    schedule = CosineSchedule(options.lr, options.steps, options.warmup_steps, options.min_lr_ratio)
    generator = torch.Generator().manual_seed(options.seed)

    def window_loss(step: int):
        inputs, targets = sample_batch(train, options.batch_size, options.seq_len, generator)
        with bf16_autocast(options.bf16_autocast):
            teacher_logits = None
            if options.alpha > 0:  # the hard-label baseline never needs the teacher
                with torch.no_grad():
                    teacher_logits = teacher(input_ids=inputs).logits
            student_logits = student(input_ids=inputs).logits
        return distill_loss(student_logits, teacher_logits, targets, options.alpha, options.temperature)

    history = []
    bar = tqdm(total=options.steps, desc=f"distill a={options.alpha}", disable=not show_progress, dynamic_ncols=True)
    for step, loss in optimizer_steps(student, optimizer, schedule, window_loss, options.steps, 1.0, progress=bar):
        if step % options.eval_every == 0 or step == options.steps:
            ppl = model_perplexity(student, held_out, eval_len)
            history.append({"step": step, "loss": round(loss.item(), 4), "held_out_perplexity": round(ppl, 3)})
            bar.set_postfix(loss=f"{loss.item():.3f}", held_out_ppl=f"{ppl:.1f}")
    bar.close()
    student.eval()
    return history


def _save_and_score(out_dir: Path, parent: Path, student, teacher, held_out, eval_len: int) -> dict:
    """Save the student with the teacher's tokenizer; score what was saved and the teacher."""
    from transformers import AutoModelForCausalLM

    from tools.evaluate import model_perplexity

    student.save_pretrained(out_dir, safe_serialization=True)
    derived.copy_tokenizer_files(parent, out_dir)
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir)
    student_ppl = model_perplexity(reloaded, held_out, eval_len)
    teacher_ppl = model_perplexity(teacher, held_out, eval_len)
    teacher_params = sum(p.numel() for p in teacher.parameters())
    student_params = sum(p.numel() for p in student.parameters())
    return {
        "teacher_parameters": teacher_params,
        "student_parameters": student_params,
        "parameter_ratio": round(student_params / teacher_params, 4),
        "held_out_perplexity": round(student_ppl, 3),
        "teacher_held_out_perplexity": round(teacher_ppl, 3),
        "perplexity_ratio": round(student_ppl / teacher_ppl, 4),
        "scored_tokens": len(held_out) - 1,
    }


def _write_manifest(out_dir: Path, parent: Path, name: str, student, metrics: dict, run: dict) -> dict:
    """Write the student's manifest (its shape under ``model``); return that shape."""
    config = student.config
    student_shape = {
        k: getattr(config, k)
        for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    }
    model = {"architecture": type(student).__name__, "parameters": metrics["student_parameters"], **student_shape}
    derived.write_derived_manifest(out_dir, parent, name=name, tool="distill", metrics=metrics,
                                   extra={"model": model}, **run)
    return student_shape


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "distill",
        help="train a smaller student on a teacher's logits (KL at a temperature + hard-label CE)",
        description="Knowledge distillation: loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) "
        "* cross-entropy. --alpha 0 is the hard-label baseline with the same code. The student is scored "
        "on the held-out split the teacher's manifest records; the report gives both perplexities.",
    )
    parser.add_argument("--model", type=Path, required=True, help="teacher model directory")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced if an artifact)")
    parser.add_argument(
        "--student-config", type=Path, default=None, help="config.json (or its directory) for the student"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="JSONL with a 'text' field to train on (default: the corpus)"
    )
    parser.add_argument("--report", type=Path, default=None, help="also write the JSON report to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_fields(parser, StudentShape, "student shape (ignored with --student-config)")
    add_fields(parser, DistillOptions, "training")
    parser.set_defaults(run=_main)


def _main(args: argparse.Namespace, command: str) -> int:
    result = run_distill(
        args.model,
        args.out,
        from_args(DistillOptions, args),
        from_args(StudentShape, args),
        args.student_config,
        args.data,
        command,
        not args.quiet,
    )
    derived.report(args.report, result)
    return 0
