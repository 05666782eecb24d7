"""``python -m tools`` (and ``turnout tools``): build tokenizers and models offline.

Subcommands:
  train-tokenizer      train the byte-level BPE tokenizer on the training split and save it
  pretrain             pretrain a tiny Llama into a directory (optionally with a given tokenizer)
  build-default-model  everything end to end into server/default_model/ (the bundled model)
  finetune             supervised fine-tuning (lora, qlora, full) on JSONL, evaluated before and after
  merge                fold a LoRA adapter into its base model
  inspect              print an artifact's manifest and check its files
  dpo, distill, quantize  derive a new artifact from a model (tools/dpo.py, distill.py, quantize.py)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tools.build import DEFAULT_MODEL_DIR, BuildConfig
from tools.finetune import FinetuneConfig
from tools.options import add_fields, from_args
from tools.pretrain import ModelShape, PretrainConfig
from tools.tokenizer import TokenizerConfig

_EPILOG_BUILD = (
    "The corpus is the Python documentation bundled with the stdlib (pydoc_data.topics); nothing is "
    "downloaded. Training stops at --steps, at --max-minutes of wall time, or when held-out "
    "perplexity stops improving for --patience evaluations; the best held-out checkpoint is saved."
)


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Offline tools: train the tokenizer, pretrain the bundled default model, fine-tune, merge "
        "and inspect artifacts.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tok = sub.add_parser(
        "train-tokenizer",
        help="train the byte-level BPE tokenizer (with ChatML template) and save it",
        description="Train a byte-level BPE tokenizer on the training split of the stdlib Python "
        "docs and save it as a Hugging Face tokenizer directory (AutoTokenizer.from_pretrained loads it).",
    )
    tok.add_argument("--out", type=Path, required=True, help="directory to write the tokenizer into")
    add_fields(tok, BuildConfig, "corpus", skip=("name", "chat_examples"))
    add_fields(tok, TokenizerConfig, "tokenizer")

    pre = sub.add_parser(
        "pretrain",
        help="pretrain a tiny Llama into a directory, with manifest",
        description="Pretrain a small LlamaForCausalLM on the stdlib Python docs and save weights, "
        "tokenizer, generation config and manifest.json into --out.",
        epilog=_EPILOG_BUILD,
    )
    pre.add_argument("--out", type=Path, required=True, help="directory to write the model into (replaced)")
    pre.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer directory to use (default: train a new one)"
    )
    _add_build_options(pre)

    build = sub.add_parser(
        "build-default-model",
        help="corpus -> tokenizer -> pretrain -> manifest into server/default_model/",
        description="Build the model the server ships with, end to end: split the corpus, train the "
        "tokenizer, pretrain, save with the ChatML chat template, and write manifest.json.",
        epilog=_EPILOG_BUILD,
    )
    build.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="output directory, replaced (default: %(default)s)",
    )
    _add_build_options(build)
    _add_artifact_commands(sub)
    for module in _derive_modules():
        module.add_parser(sub)  # each sets `run` to its handler
    return parser


def _derive_modules():
    from tools import distill, dpo, quantize

    return (dpo, distill, quantize)


def _add_artifact_commands(sub) -> None:
    ft = sub.add_parser(
        "finetune",
        help="supervised fine-tuning (lora, qlora, full) on JSONL, with held-out evaluation",
        description="Fine-tune a model directory on JSONL records ({'messages': [...]} chat or "
        "{'prompt', 'completion'}); the loss covers the replies only. Evaluates held-out loss, perplexity "
        "and exact match of greedy answers before and after, prints a JSON report and records it in the "
        "output's manifest. lora/qlora write a LoRA adapter artifact, full a complete model.",
    )
    ft.add_argument("--model", type=Path, required=True, help="base model directory")
    ft.add_argument("--data", type=Path, required=True, help="training records, JSONL")
    ft.add_argument("--out", type=Path, required=True, help="output artifact directory (replaced)")
    ft.add_argument("--eval-data", type=Path, default=None,
                    help="held-out records, JSONL (default: hold out --eval-fraction of --data)")
    ft.add_argument("--report", type=Path, default=None, help="also write the JSON report to this file")
    ft.add_argument("--quiet", action="store_true", help="no progress bars")
    add_fields(ft, FinetuneConfig, "training")

    mg = sub.add_parser(
        "merge",
        help="fold a LoRA adapter into its base model (a full artifact)",
        description="Load --base, apply the LoRA adapter in --adapter, merge it into the weights "
        "(peft merge_and_unload) and save a full model with tokenizer and manifest into --out.",
    )
    mg.add_argument("--base", type=Path, required=True, help="base model directory the adapter was trained on")
    mg.add_argument("--adapter", type=Path, required=True, help="LoRA adapter directory (turnout tools finetune)")
    mg.add_argument("--out", type=Path, required=True, help="output model directory (replaced)")

    ins = sub.add_parser(
        "inspect",
        help="print an artifact's manifest (name, parent, lineage, files) and verify its checksums",
        description="Print the manifest.json of a model or adapter directory readably, and check every "
        "file against its sha256. Exits 1 when a file does not match.",
    )
    ins.add_argument("dir", type=Path, help="artifact directory (holds manifest.json)")
    ins.add_argument("--json", action="store_true", help="print the manifest (format-2 view) as JSON")
    ins.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                     help="check every file's sha256 against the manifest")


def _add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_fields(parser, BuildConfig, "corpus and data")
    add_fields(parser, TokenizerConfig, "tokenizer (ignored with --tokenizer)")
    add_fields(parser, ModelShape, "model shape")
    add_fields(parser, PretrainConfig, "optimisation")


def _build_config(args: argparse.Namespace) -> BuildConfig:
    return from_args(
        BuildConfig,
        args,
        tokenizer=from_args(TokenizerConfig, args),
        shape=from_args(ModelShape, args),
        pretrain=from_args(PretrainConfig, args),
    )


def _train_tokenizer(args: argparse.Namespace) -> int:
    from tools.corpus import split_corpus
    from tools.tokenizer import save_tokenizer, train_tokenizer

    split = split_corpus(seed=args.corpus_seed, held_out_fraction=args.held_out_fraction)
    tokenizer = train_tokenizer(split.train.values(), from_args(TokenizerConfig, args))
    out = save_tokenizer(tokenizer, args.out)
    print(f"tokenizer with {len(tokenizer)} tokens written to {out}")
    return 0


def _pretrain(args: argparse.Namespace, command: str) -> int:
    from tools.build import build_model

    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    tokenizer = None
    if getattr(args, "tokenizer", None) is not None:
        from transformers import AutoTokenizer

        if not args.tokenizer.is_dir():
            raise ValueError(f"--tokenizer {str(args.tokenizer)!r} is not a directory")
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    manifest = build_model(args.out, _build_config(args), tokenizer, command, show_progress=not args.quiet)
    evaluation, training = manifest["evaluation"], manifest["training"]
    print(
        f"{manifest['name']}: {manifest['model']['parameters']:,} parameters, "
        f"held-out perplexity {evaluation['held_out_perplexity']} "
        f"(unigram baseline {evaluation['unigram_baseline_perplexity']}), "
        f"best step {training['best_step']} of {training['steps_done']} ({training['stop_reason']}), "
        f"{training['seconds']} s -> {Path(args.out).resolve()}"
    )
    return 0


def _finetune(args: argparse.Namespace, command: str) -> int:
    from tools.derived import report
    from tools.finetune import finetune

    result = finetune(args.model, args.data, args.out, from_args(FinetuneConfig, args), args.eval_data,
                      command, show_progress=not args.quiet)
    report(args.report, result)
    return 0


def _merge(args: argparse.Namespace, command: str) -> int:
    from tools.merge import merge

    manifest = merge(args.base, args.adapter, args.out, command)
    print(f"merged {args.adapter} into {args.base} -> {Path(args.out).resolve()} "
          f"({len(manifest['lineage'])} lineage steps)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from tools.inspect_artifact import inspect

    text, intact = inspect(args.dir, args.json, args.verify)
    print(text)
    return 0 if intact else 1


def main(argv: list[str] | None = None, prog: str = "python -m tools") -> int:
    """Run one subcommand; returns the process exit status. `prog` is how the user invoked the tools
    (it appears in --help and in the manifest's record of the command)."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(prog).parse_args(argv)
    command = shlex.join([*prog.split(), *argv])
    try:
        if hasattr(args, "run"):
            return args.run(args, command)
        if args.command == "train-tokenizer":
            return _train_tokenizer(args)
        if args.command == "finetune":
            return _finetune(args, command)
        if args.command == "merge":
            return _merge(args, command)
        if args.command == "inspect":
            return _inspect(args)
        return _pretrain(args, command)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
