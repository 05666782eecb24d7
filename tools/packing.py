"""Turn documents into one packed token stream, and cut it into training and evaluation windows.

Packing (documents joined, each followed by the end-of-text id) wastes no compute on padding,
and the model learns that ``<|endoftext|>`` ends a document. Training draws windows at random
offsets, which on a small corpus gives far more distinct contexts than fixed chunks.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import PreTrainedTokenizerFast


def token_stream(tokenizer: PreTrainedTokenizerFast, documents: Iterable[str], eos_id: int) -> torch.Tensor:
    """All documents tokenized and concatenated, each one followed by ``eos_id``."""
    ids: list[int] = []
    # The backend tokenizer encodes whole documents without the model_max_length warning.
    for encoding in tokenizer.backend_tokenizer.encode_batch(list(documents), add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(eos_id)
    if len(ids) < 2:
        raise ValueError(f"token stream needs at least 2 tokens, got {len(ids)}")
    return torch.tensor(ids, dtype=torch.long)


def sample_batch(
    stream: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows: inputs and their next-token targets, both ``[B, seq_len]``."""
    if len(stream) < seq_len + 1:
        raise ValueError(f"stream of {len(stream)} tokens is shorter than seq_len+1={seq_len + 1}")
    starts = torch.randint(0, len(stream) - seq_len, (batch_size,), generator=generator)
    offsets = torch.arange(seq_len + 1)
    windows = stream[starts[:, None] + offsets[None, :]]
    return windows[:, :-1], windows[:, 1:]


def eval_windows(stream: torch.Tensor, seq_len: int) -> list[torch.Tensor]:
    """Windows of up to ``seq_len + 1`` tokens that overlap by one token.

    Every token after the first is predicted exactly once, so the targets are exactly
    ``stream[1:]`` — the same tokens a baseline is scored on.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len!r}")
    return [stream[i : i + seq_len + 1] for i in range(0, len(stream) - 1, seq_len)]
