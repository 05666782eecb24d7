"""Supervised fine-tuning data: JSONL records -> token ids with a loss mask, and a held-out split.

Two record shapes are accepted, one per line:

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}, ...]}
    {"prompt": "...", "completion": "..."}

Chat records are rendered with the model's own chat template; the loss covers the assistant turns
only (their content and the template's end-of-turn marker), never the prompt. Prompt/completion
records are plain text: the loss covers the completion and an end-of-sequence token.

Each piece is tokenized on its own (prompt up to the assistant header, then the reply), which is
exactly how the server sees it: it tokenizes the rendered prompt, and the model continues from there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tools import derived

IGNORE = -100
"""Label of a token the loss skips (PyTorch cross_entropy's ignore_index)."""


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    """input_ids where the loss applies, IGNORE elsewhere."""
    prompt_ids: list[int]
    """Everything before the last reply: what evaluation feeds the model."""
    reference: str
    """The last reply's text: what exact match compares the model's greedy answer with."""


def read_jsonl(path: str | Path) -> list[dict]:
    """Chat records ({'messages': [...]}) or prompt/completion records, one JSON object per line."""
    records = derived.read_jsonl(path, ())
    for number, record in enumerate(records, 1):
        if not ("messages" in record or "prompt" in record):
            raise ValueError(f"{path}: record {number}: expected 'messages' or 'prompt'/'completion'")
    return records


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _chat_example(tokenizer, messages: list[dict], where: str) -> Example:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{where}: chat records need a tokenizer with a chat template")
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError(f"{where}: the last message must be the assistant's reply")
    input_ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    prompt_ids: list[int] = []
    for i, message in enumerate(messages):
        if not isinstance(message.get("content"), str) or not message.get("role"):
            raise ValueError(f"{where}: message {i} needs a string 'role' and 'content'")
        if message["role"] == "assistant":
            header = _render(tokenizer, messages[:i], add_generation_prompt=True)[len(rendered):]
            ids = tokenizer.encode(header, add_special_tokens=False)
            input_ids += ids
            labels += [IGNORE] * len(ids)
            rendered += header
            prompt_ids = list(input_ids)
        full = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not full.startswith(rendered):
            raise ValueError(f"{where}: the chat template does not render conversations prefix by prefix")
        piece, rendered = full[len(rendered):], full
        ids = tokenizer.encode(piece, add_special_tokens=False)
        input_ids += ids
        labels += ids if message["role"] == "assistant" else [IGNORE] * len(ids)
    return Example(input_ids, labels, prompt_ids, messages[-1]["content"])


def _completion_example(tokenizer, record: dict, where: str) -> Example:
    prompt, completion = record.get("prompt"), record.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise ValueError(f"{where}: 'prompt' and 'completion' must both be strings")
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    completion_ids = tokenizer.encode(completion, add_special_tokens=False)
    if tokenizer.eos_token_id is not None:
        completion_ids.append(tokenizer.eos_token_id)
    return Example(prompt_ids + completion_ids, [IGNORE] * len(prompt_ids) + completion_ids, prompt_ids, completion)


def tokenize_records(tokenizer, records: list[dict], max_length: int, source: str = "data") -> list[Example]:
    """One Example per record; records longer than max_length tokens are cut (their tail loses its loss)."""
    examples = []
    for number, record in enumerate(records, 1):
        where = f"{source} record {number}"
        if "messages" in record:
            example = _chat_example(tokenizer, record["messages"], where)
        else:
            example = _completion_example(tokenizer, record, where)
        example.input_ids, example.labels = example.input_ids[:max_length], example.labels[:max_length]
        if all(label == IGNORE for label in example.labels):
            raise ValueError(f"{where}: nothing left to learn after cutting to max_length {max_length}")
        examples.append(example)
    return examples


def split_held_out(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held_out): a seeded shuffle, then `fraction` of the records (at least one) held out."""
    if not 0 < fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {fraction!r}")
    if len(records) < 2:
        raise ValueError(f"need at least 2 records to hold some out, got {len(records)}")
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    n_held = max(1, round(len(records) * fraction))
    return shuffled[n_held:], shuffled[:n_held]
