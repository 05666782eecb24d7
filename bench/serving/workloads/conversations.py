"""Prompts from a local file of conversations: JSONL, one conversation per line (or one JSON list of them),
each either ShareGPT-style `{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value":
...}, ...]}` or OpenAI-style `{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}`.

Each conversation gives one request: its first user turn is the prompt, and the tokens of the answer that
follows are the output length (`--output-len` replaces it when given), as `vllm bench serve --dataset-name
sharegpt` does. Conversations with no user turn followed by an answer are skipped, and so are those longer
than `--max-total-len` tokens (prompt + answer) when it is set; how many were skipped is printed. The file is
read in order; with `--shuffle` in a seeded random order. When a sweep needs more requests than the file
has, it starts over (say so: later levels then repeat prompts a prefix cache may hold)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from bench.serving.tokenizers import TextTooLong
from bench.serving.workloads import Sample

USER_ROLES = {"human", "user"}
ANSWER_ROLES = {"gpt", "assistant", "chatgpt", "bard", "bing", "model"}


def read_conversations(path: str) -> list[list[tuple[str, str]]]:
    """Every conversation in the file as (role, text) turns."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    conversations = []
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: record {number} is not a JSON object")
        if "conversations" in record:
            turns = [(str(t.get("from", "")).lower(), t.get("value") or "") for t in record["conversations"]]
        elif "messages" in record:
            turns = [(str(t.get("role", "")).lower(), _content_text(t.get("content"))) for t in record["messages"]]
        else:
            raise ValueError(f"{path}: record {number} has neither `conversations` nor `messages`")
        conversations.append(turns)
    return conversations


def _content_text(content) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def first_exchange(turns: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The first user turn with text and the answer right after it."""
    for (role, text), (next_role, answer) in zip(turns, turns[1:], strict=False):
        if role in USER_ROLES and text.strip() and next_role in ANSWER_ROLES:
            return text, answer
    return None


async def build_sets(options, tokenizer, num_sets: int, per_set: int) -> list[list[Sample]]:
    if not options.dataset_path:
        raise ValueError("the conversations workload needs --dataset-path FILE")
    conversations = read_conversations(options.dataset_path)
    if options.shuffle:
        random.Random(options.seed).shuffle(conversations)
    samples, skipped = [], 0
    for turns in conversations:
        exchange = first_exchange(turns)
        if exchange is None:
            skipped += 1
            continue
        prompt, answer = exchange
        try:
            ids = await tokenizer.encode(prompt)
            output_len = options.output_len or max(1, len(await tokenizer.encode_long(answer)))
        except TextTooLong:  # the server's tokenizer refuses a prompt longer than its context
            skipped += 1
            continue
        if options.max_total_len and len(ids) + output_len > options.max_total_len:
            skipped += 1
            continue
        samples.append(Sample(prompt, ids, len(ids), output_len))
    if skipped:
        print(f"turnout bench: skipped {skipped} of {len(conversations)} conversations (no user turn with an "
              "answer, longer than --max-total-len, or a prompt longer than the context)", file=sys.stderr)
    if not samples:
        raise ValueError(f"{options.dataset_path}: no usable conversation")
    needed = num_sets * per_set
    if needed > len(samples):
        print(f"turnout bench: {options.dataset_path} has {len(samples)} usable conversations for {needed} "
              "requests; they repeat", file=sys.stderr)
    flat = [samples[i % len(samples)] for i in range(needed)]
    return [flat[i * per_set : (i + 1) * per_set] for i in range(num_sets)]
