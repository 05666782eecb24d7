"""Train the byte-level BPE tokenizer of the default model and save it in Hugging Face format.

Byte-level BPE has no unknown token: every UTF-8 string encodes and decodes back exactly,
which the server relies on when it streams text. The directory it writes loads with
``transformers.AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tools.chat import CHATML_TEMPLATE, IM_END, IM_START

EOS = "<|endoftext|>"
"""Ends a document; also serves as bos and pad (the model never needs a separate pad id)."""

SPECIAL_TOKENS = (EOS, IM_START, IM_END)
"""Special tokens get the first ids, in this order: 0, 1, 2."""


@dataclass(frozen=True)
class TokenizerConfig:
    """How to train the tokenizer."""

    vocab_size: int = 4096
    """Total vocabulary including the 256 byte symbols and the special tokens."""
    min_frequency: int = 2
    """A pair must occur this often in the training text to become a merge."""

    def validate(self) -> None:
        floor = 256 + len(SPECIAL_TOKENS)
        if self.vocab_size <= floor:
            raise ValueError(
                f"vocab_size must be > {floor} (bytes + special tokens), got {self.vocab_size!r}"
            )
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {self.min_frequency!r}")


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig | None = None) -> PreTrainedTokenizerFast:
    """Train on ``texts`` and wrap the result with special tokens and the ChatML template."""
    config = config or TokenizerConfig()
    config.validate()
    core = Tokenizer(models.BPE())
    # add_prefix_space=False and no normaliser keep encode/decode an exact round trip.
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def stop_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids that end generation: the end of a document and the end of a chat turn."""
    ids = [tokenizer.convert_tokens_to_ids(token) for token in (EOS, IM_END)]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"tokenizer lacks a stop token: {dict(zip((EOS, IM_END), ids, strict=True))}")
    return ids


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    """Write tokenizer.json, tokenizer_config.json and the chat template into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return out
