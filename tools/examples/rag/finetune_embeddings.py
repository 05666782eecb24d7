"""A few minutes of contrastive fine-tuning, so that the model's pooled states become an embedding.

    python -m tools.examples.rag.finetune_embeddings --out /tmp/turnout-rag-embedder
    turnout serve --model /tmp/turnout-rag-embedder --served-model-name rag-embedder &
    python -m tools.examples.rag.run --model rag-embedder

Training pairs come from the indexed passages only (passages.py), never from the held-out ones the
questions are cut from: an anchor is one sentence of an indexed passage, its positive another indexed
passage of the same topic (the same passage when its topic has only one). Each batch takes one pair from
each of `batch` different topics, and the loss is InfoNCE with in-batch negatives (each anchor must pick
its own positive among the batch's passages, and each passage its anchor), on the mean-pooled,
L2-normalised final hidden states: exactly what turnout's /v1/embeddings computes. The whole causal LM is
saved (its head included), so turnout serves it like any model.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from tools.examples.rag import passages


def pooled(model, tokenizer, texts: list[str], max_tokens: int) -> torch.Tensor:
    """Mean over each text's tokens of the base model's final hidden states, L2-normalised (as served)."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    mask = batch.attention_mask[..., None].to(hidden.dtype)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def pairs(by_topic: dict[str, list[str]], count: int, rng: random.Random) -> list[tuple[str, str]]:
    chosen = []
    for topic in rng.sample(sorted(by_topic), count):
        texts = by_topic[topic]
        anchor_passage = rng.randrange(len(texts))
        sentences = passages.sentences(texts[anchor_passage]) or [texts[anchor_passage]]
        anchor = " ".join(rng.choice(sentences).split()[:30])
        others = [i for i in range(len(texts)) if i != anchor_passage] or [anchor_passage]
        chosen.append((anchor, texts[rng.choice(others)]))
    return chosen


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from server.cli import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=None, help="model directory; default: the bundled model")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32, help="topics (pairs) per step")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--max-tokens", type=int, default=128, help="passages are cut to this many tokens")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    base = args.base or default_model_dir()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.train()

    import pydoc_data.topics

    indexed, _ = passages.build(pydoc_data.topics.topics)
    by_topic: dict[str, list[str]] = {}
    for p in indexed:
        by_topic.setdefault(p.topic, []).append(p.text)
    optimizer = torch.optim.AdamW(model.model.parameters(), lr=args.lr, weight_decay=0.01)
    started = time.monotonic()
    for step in range(1, args.steps + 1):
        anchors, positives = zip(*pairs(by_topic, min(args.batch, len(by_topic)), rng), strict=True)
        a = pooled(model, tokenizer, list(anchors), args.max_tokens)
        p = pooled(model, tokenizer, list(positives), args.max_tokens)
        logits = a @ p.T / args.temperature
        target = torch.arange(len(anchors))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 10 == 0 or step == 1:
            print(f"step {step}/{args.steps} loss {loss.item():.3f} ({time.monotonic() - started:.0f} s)", flush=True)
    model.eval()
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"saved to {args.out} after {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
