"""Held-out preference accuracy: how often a model finds the chosen reply more likely than the rejected one.

The measure is the policy's own: the summed log-probability of the chosen completion's tokens beats
that of the rejected one, both scored after the same chat-formatted prompt. (DPO's implicit reward
margin, ``beta * (policy - reference)`` log-ratio, is also reported after training; before training it
is zero for every pair, so it cannot show a starting value.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def as_conversation(row: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """A JSONL row with string fields becomes a one-turn chat: user prompt, assistant reply."""

    def turn(value: Any, role: str) -> list[dict[str, str]]:
        if isinstance(value, str):
            return [{"role": role, "content": value}]
        if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
            return value
        raise ValueError(f"expected a string or a list of messages for {role!r}, got {value!r:.80}")

    return {
        "prompt": turn(row["prompt"], "user"),
        "chosen": turn(row["chosen"], "assistant"),
        "rejected": turn(row["rejected"], "assistant"),
    }


def _ids(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False).input_ids


def completion_pair(tokenizer, row: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, chosen completion ids, rejected completion ids), split as DPOTrainer splits them."""
    conv = as_conversation(row)
    prompt = _ids(tokenizer, conv["prompt"], True)
    chosen = _ids(tokenizer, conv["prompt"] + conv["chosen"], False)
    rejected = _ids(tokenizer, conv["prompt"] + conv["rejected"], False)
    cut = 0
    while cut < min(len(prompt), len(chosen), len(rejected)) and prompt[cut] == chosen[cut] == rejected[cut]:
        cut += 1
    return prompt[:cut], chosen[cut:], rejected[cut:]


@torch.no_grad()
def completion_logprob(model, prompt: list[int], completion: list[int]) -> float:
    """Sum of log p(completion token | everything before it)."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids[:, :-1]).logits[0, len(prompt) - 1 :].float()
    return -F.cross_entropy(logits, ids[0, len(prompt) :], reduction="sum").item()


def preference_scores(model, tokenizer, rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(chosen, rejected) summed log-probabilities per row."""
    model.eval()
    scores = []
    for row in rows:
        prompt, chosen, rejected = completion_pair(tokenizer, row)
        scores.append((completion_logprob(model, prompt, chosen), completion_logprob(model, prompt, rejected)))
    return scores


def preference_accuracy(
    model, tokenizer, rows: list[dict[str, Any]], reference: list[tuple[float, float]] | None = None, beta: float = 0.1
) -> dict[str, float]:
    """Accuracy of the policy's log-probabilities and, given the reference's scores, of DPO's implicit reward."""
    scores = preference_scores(model, tokenizer, rows)
    result = {
        "logprob_accuracy": round(sum(c > r for c, r in scores) / len(scores), 4),
        "mean_logprob_margin": round(sum(c - r for c, r in scores) / len(scores), 4),
        "pairs": len(scores),
    }
    if reference is not None:
        margins = [beta * ((c - rc) - (r - rr)) for (c, r), (rc, rr) in zip(scores, reference, strict=True)]
        result["reward_accuracy"] = round(sum(m > 0 for m in margins) / len(margins), 4)
        result["mean_reward_margin"] = round(sum(margins) / len(margins), 4)
    return result
