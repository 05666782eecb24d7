"""End to end: corpus -> tokenizer -> pretrain -> save with chat template -> manifest.

Everything is written to a temporary sibling directory first and swapped into place at the
end, so an interrupted build never leaves a half-written model where the server looks for one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

from tools import corpus
from tools.artifact import check_out_dir, staged_output
from tools.chat import chat_examples
from tools.evaluate import model_perplexity, unigram_perplexity
from tools.manifest import lineage_entry, write_manifest
from tools.packing import token_stream
from tools.pretrain import ModelShape, PretrainConfig, pretrain
from tools.tokenizer import EOS, TokenizerConfig, save_tokenizer, stop_token_ids, train_tokenizer

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "server" / "default_model"
DEFAULT_NAME = "turnout-default-tiny-llama"


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the model, recorded verbatim in the manifest."""

    name: str = DEFAULT_NAME
    """The model name recorded in the manifest (and served by default)."""
    corpus_seed: int = 0
    """Seeds which documentation topics are held out."""
    held_out_fraction: float = 0.05
    """Share of corpus characters held out (whole topics) for evaluation and early stopping."""
    chat_examples: bool = True
    """Mix short ChatML conversations (from training topics) into pretraining."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shape: ModelShape = field(default_factory=ModelShape)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


def build_model(
    out_dir: str | Path,
    config: BuildConfig,
    tokenizer: PreTrainedTokenizerFast | None = None,
    command: str = "",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Build a model into ``out_dir`` (replacing a previous build there); return its manifest.

    Without ``tokenizer`` a new one is trained on the training split.
    """
    out = check_out_dir(out_dir)
    started = time.monotonic()
    split = corpus.split_corpus(seed=config.corpus_seed, held_out_fraction=config.held_out_fraction)
    tokenizer_seconds = 0.0
    if tokenizer is None:
        tokenizer = train_tokenizer(split.train.values(), config.tokenizer)
        tokenizer_seconds = time.monotonic() - started
    stops = stop_token_ids(tokenizer)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    vocab_size = len(tokenizer)
    train_docs = token_stream(tokenizer, split.train.values(), eos_id)
    conversations = chat_examples(split.train) if config.chat_examples else []
    train = token_stream(tokenizer, [*split.train.values(), *conversations], eos_id)
    held_out = token_stream(tokenizer, split.held_out.values(), eos_id)

    result = pretrain(config.shape, config.pretrain, train, held_out, vocab_size, eos_id, show_progress)
    model = result.model
    model.config.attention_dropout = 0.0  # a training-time setting; the artifact should not carry it
    model.generation_config = GenerationConfig(bos_token_id=eos_id, eos_token_id=stops, pad_token_id=eos_id)

    with staged_output(out) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        save_tokenizer(tokenizer, staging)
        # Score the saved artifact, not the in-memory model: that is what the server will load.
        reloaded = AutoModelForCausalLM.from_pretrained(staging)
        held_out_ppl = model_perplexity(reloaded, held_out, config.pretrain.seq_len)
        info = {
            "name": config.name,
            "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": command,
            "arguments": asdict(config),
            "seeds": {"corpus_split": config.corpus_seed, "pretrain": config.pretrain.seed},
            "corpus": {
                "source": "pydoc_data.topics.topics of the Python that ran the build",
                "sha256": split.digest(),
                "train_topics": len(split.train),
                "held_out_topics": sorted(split.held_out),
                "train_tokens": len(train_docs),
                "chat_examples": len(conversations),
                "held_out_tokens": len(held_out),
            },
            "model": {
                "architecture": type(model).__name__,
                "parameters": sum(p.numel() for p in model.parameters()),
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "vocab_size": vocab_size,
                "context_length": config.shape.max_position_embeddings,
                "stop_token_ids": stops,
            },
            "training": result.summary(),
            "evaluation": {
                "held_out_perplexity": round(held_out_ppl, 3),
                "unigram_baseline_perplexity": round(unigram_perplexity(train_docs, held_out, vocab_size), 3),
                "scored_tokens": len(held_out) - 1,
                "baseline": "add-one smoothed token unigram of the train split, same tokenizer and tokens",
            },
            "durations_seconds": {
                "tokenizer": round(tokenizer_seconds, 1),
                "pretrain": result.seconds,
                "total": round(time.monotonic() - started, 1),
            },
        }
        # Format 2: a pretrained model is the root of every lineage built on it.
        info["lineage"] = [lineage_entry("pretrain", command, info["arguments"], info["created_utc"],
                                         info["durations_seconds"]["total"], info["evaluation"])]
        manifest = write_manifest(staging, info)
    return manifest
