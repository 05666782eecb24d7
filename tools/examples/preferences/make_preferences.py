"""Make a preference set: the same answer with a friendly sign-off (chosen) or without one (rejected).

Prompts and answers come from the Python docs corpus (a topic's title and one sentence of it); the
training pairs use training topics and the held-out pairs use the held-out topics of the bundled
model's split, so held-out accuracy is measured on questions and answers the model never tuned on.
The chosen reply is longer, so a model that has not learned the preference finds the rejected one more
likely (its starting accuracy is near zero). Whether a model learned the preference is checkable by a
script: its reply ends with ``SIGN_OFF`` (see ``follows_preference`` and check_replies.py).

    python -m tools.examples.preferences.make_preferences --out /tmp/prefs
    # -> /tmp/prefs/train.jsonl, /tmp/prefs/held_out.jsonl (fields: prompt, chosen, rejected)
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

SIGN_OFF = "Hope this helps!"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_MAX_ANSWER_CHARS = 220


def follows_preference(reply: str) -> bool:
    """The checkable behaviour: the reply ends with the friendly sign-off."""
    return reply.strip().endswith(SIGN_OFF)


def _pairs(documents: dict[str, str], per_topic: int, rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for name, text in documents.items():
        paragraphs = text.split("\n\n")
        title = paragraphs[0].strip() if paragraphs and "\n" not in paragraphs[0] else name
        sentences = [
            s.strip()
            for p in paragraphs[1:]
            if not p[:1].isspace()  # prose, not code
            for s in _SENTENCE.split(p)
            if 30 <= len(s.strip()) <= _MAX_ANSWER_CHARS and s.strip().endswith(".")
        ]
        for sentence in rng.sample(sentences, min(per_topic, len(sentences))):
            prompt = f"Tell me about {title[:1].lower() + title[1:]}."
            rows.append(
                {"prompt": prompt, "chosen": f"{sentence} {SIGN_OFF}", "rejected": sentence}
            )
    rng.shuffle(rows)
    return rows


def make_preferences(out: str | Path, per_topic: int = 4, seed: int = 0, corpus_seed: int = 0) -> dict[str, int]:
    """Write ``train.jsonl`` and ``held_out.jsonl`` into ``out``; returns the row counts."""
    from tools.corpus import split_corpus

    split = split_corpus(seed=corpus_seed)
    rng = random.Random(seed)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    counts = {}
    for part, documents, per in (("train", split.train, per_topic), ("held_out", split.held_out, 4 * per_topic)):
        rows = _pairs(documents, per, rng)
        (root / f"{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        counts[part] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic preference set (train.jsonl, held_out.jsonl).")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the two JSONL files into")
    parser.add_argument("--per-topic", type=int, default=4, help="pairs per training topic (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds which sentences are picked (default: %(default)s)")
    args = parser.parse_args(argv)
    print(json.dumps(make_preferences(args.out, args.per_topic, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
