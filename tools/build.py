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

import torch
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

from tools import corpus
from tools.artifact import check_out_dir, staged_output
from tools.chat import chat_examples
from tools.evaluate import model_perplexity, unigram_perplexity
from tools.manifest import lineage_entry, write_manifest
from tools.packing import token_stream
from tools.pretrain import ModelShape, PretrainConfig, PretrainResult, pretrain
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
    streams = _Streams.of(tokenizer, split, config.chat_examples)
    result = pretrain(config.shape, config.pretrain, streams.train, streams.held_out, len(tokenizer),
                      streams.eos_id, show_progress)
    model = result.model
    model.config.attention_dropout = 0.0  # a training-time setting; the artifact should not carry it
    model.generation_config = GenerationConfig(bos_token_id=streams.eos_id, eos_token_id=streams.stops,
                                               pad_token_id=streams.eos_id)

    with staged_output(out) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        save_tokenizer(tokenizer, staging)
        # Score the saved artifact, not the in-memory model: that is what the server will load.
        reloaded = AutoModelForCausalLM.from_pretrained(staging)
        held_out_ppl = model_perplexity(reloaded, streams.held_out, config.pretrain.seq_len)
        durations = {"tokenizer": round(tokenizer_seconds, 1), "pretrain": result.seconds,
                     "total": round(time.monotonic() - started, 1)}
        info = _manifest_info(config, command, split, streams, result, held_out_ppl, durations)
        manifest = write_manifest(staging, info)
    return manifest


@dataclass(frozen=True)
class _Streams:
    """The corpus as packed token streams, with the ids that end a document and a reply."""

    train_docs: torch.Tensor
    """The training documents alone: what the unigram baseline is fitted on."""
    train: torch.Tensor
    """The training documents and the chat conversations: what pretraining sees."""
    held_out: torch.Tensor
    conversations: int
    eos_id: int
    stops: list[int]

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerFast, split: corpus.CorpusSplit, with_chat: bool) -> _Streams:
        stops = stop_token_ids(tokenizer)
        eos_id = tokenizer.convert_tokens_to_ids(EOS)
        conversations = chat_examples(split.train) if with_chat else []
        return cls(
            train_docs=token_stream(tokenizer, split.train.values(), eos_id),
            train=token_stream(tokenizer, [*split.train.values(), *conversations], eos_id),
            held_out=token_stream(tokenizer, split.held_out.values(), eos_id),
            conversations=len(conversations),
            eos_id=eos_id,
            stops=stops,
        )


def _manifest_info(config: BuildConfig, command: str, split: corpus.CorpusSplit, streams: _Streams,
                   result: PretrainResult, held_out_ppl: float, durations: dict[str, float]) -> dict[str, Any]:
    """What the manifest says about the build (write_manifest adds versions and the file table)."""
    vocab_size = result.model.config.vocab_size
    info = {
        "name": config.name,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "arguments": asdict(config),
        "seeds": {"corpus_split": config.corpus_seed, "pretrain": config.pretrain.seed},
        "corpus": _corpus_record(split, streams),
        "model": _model_record(result.model, config, streams.stops),
        "training": result.summary(),
        "evaluation": {
            "held_out_perplexity": round(held_out_ppl, 3),
            "unigram_baseline_perplexity": round(unigram_perplexity(streams.train_docs, streams.held_out,
                                                                    vocab_size), 3),
            "scored_tokens": len(streams.held_out) - 1,
            "baseline": "add-one smoothed token unigram of the train split, same tokenizer and tokens",
        },
        "durations_seconds": durations,
    }
    # Format 2: a pretrained model is the root of every lineage built on it.
    info["lineage"] = [lineage_entry("pretrain", command, info["arguments"], info["created_utc"],
                                     durations["total"], info["evaluation"])]
    return info


def _corpus_record(split: corpus.CorpusSplit, streams: _Streams) -> dict[str, Any]:
    return {
        "source": "pydoc_data.topics.topics of the Python that ran the build",
        "sha256": split.digest(),
        "train_topics": len(split.train),
        "held_out_topics": sorted(split.held_out),
        "train_tokens": len(streams.train_docs),
        "chat_examples": streams.conversations,
        "held_out_tokens": len(streams.held_out),
    }


def _model_record(model, config: BuildConfig, stops: list[int]) -> dict[str, Any]:
    return {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "vocab_size": model.config.vocab_size,
        "context_length": config.shape.max_position_embeddings,
        "stop_token_ids": stops,
    }
