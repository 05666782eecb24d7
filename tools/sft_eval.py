"""Held-out evaluation of a fine-tuned model: loss and perplexity on the reply tokens, and exact match
of greedy answers against the references (what a user of the task actually sees)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tools.sft_data import IGNORE, Example


def collate(examples: list[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels for training and loss evaluation."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def reply_stop_ids(model, tokenizer) -> list[int]:
    """Every token that ends a reply: the generation config's EOS ids, the tokenizer's EOS and, for chat
    templates, the end-of-turn marker."""
    ids: list[int] = []
    candidates = [getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id]
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    for value in (*candidates, end_of_turn):
        for token in value if isinstance(value, list) else [value]:
            if isinstance(token, int) and token not in ids:
                ids.append(token)
    return ids


def padding_id(tokenizer, stops: list[int]) -> int:
    """The tokenizer's pad id, else the first stop token (padding is masked out, so any id would do)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return stops[0] if stops else 0


def reply_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(summed next-token cross-entropy over labelled tokens, number of them)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE,
                           reduction="sum")
    return loss, int((targets != IGNORE).sum())


@torch.no_grad()
def held_out_loss(model, examples: list[Example], pad_token_id: int, batch_size: int = 16) -> dict[str, float]:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss, n = reply_loss(model, collate(examples[start:start + batch_size], pad_token_id))
        total, count = total + loss.item(), count + n
    mean = total / max(count, 1)
    return {"loss": round(mean, 4), "perplexity": round(math.exp(min(mean, 50.0)), 3), "tokens": count}


def normalize_answer(text: str) -> str:
    return " ".join(text.split())


@torch.no_grad()
def greedy_answers(model, tokenizer, examples: list[Example], stop_token_ids: list[int], pad_token_id: int,
                   max_new_tokens: int, batch_size: int = 16, show_progress: bool = False) -> list[str]:
    """Each example's prompt continued greedily (left-padded batches), decoded without special tokens."""
    model.eval()
    answers: list[str] = []
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc="greedy answers", unit="batch", disable=not show_progress, leave=False):
        chunk = examples[start:start + batch_size]
        width = max(len(e.prompt_ids) for e in chunk)
        ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, e in enumerate(chunk):
            ids[row, width - len(e.prompt_ids):] = torch.tensor(e.prompt_ids)
            mask[row, width - len(e.prompt_ids):] = 1
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=stop_token_ids, pad_token_id=pad_token_id)
        for row in out[:, width:].tolist():
            answers.append(tokenizer.decode(row, skip_special_tokens=True))
    return answers


def evaluate(model, tokenizer, examples: list[Example], stop_token_ids: list[int], pad_token_id: int,
             max_new_tokens: int, show_progress: bool = False) -> dict:
    """{"loss", "perplexity", "tokens", "exact_match", "examples", "samples": a few (reference, answer)}."""
    result = held_out_loss(model, examples, pad_token_id)
    answers = greedy_answers(model, tokenizer, examples, stop_token_ids, pad_token_id, max_new_tokens,
                             show_progress=show_progress)
    hits = [normalize_answer(a) == normalize_answer(e.reference) for a, e in zip(answers, examples, strict=True)]
    result["exact_match"] = round(sum(hits) / len(hits), 4)
    result["examples"] = len(hits)
    result["samples"] = [{"reference": e.reference, "answer": a} for e, a in zip(examples[:3], answers[:3], strict=True)]
    return result
