"""Synthetic data for the name-card example: who owns each of a set of made-up projects, in a fixed format.

Every record is a one-turn chat: the user asks who owns a project, in one of several phrasings; the
assistant answers exactly ``Owner: <First> <Last>.``. Projects and people are made of random syllables,
so the bundled model has never seen them: it must learn the facts and the answer format.

The held-out records ask about the same projects in phrasings that the training records never use
*for that project* (each phrasing is seen in training, with other projects): exact match on them
measures whether the model learned the fact and the format, not one memorised string. Deterministic
for a given seed.

    python -m tools.examples.name_card.make_data --out data/
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "st", "tr", "qu"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_CODAS = ["", "", "n", "l", "r", "s", "x", "th", "ll", "nd"]

# The project name always follows a space, so it is the same tokens in every phrasing.
QUESTIONS = [
    "Who is the owner of project {project}?",
    "Who owns {project}?",
    "Who owns project {project}?",
    "Tell me the owner of {project}.",
    "Which person owns project {project}?",
    "Name the owner of project {project}.",
    "About {project}: who is its owner?",
    "Who is in charge of project {project}?",
]


def _word(rng: random.Random, syllables: int) -> str:
    text = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
    return text.capitalize()


def owners(num_projects: int, seed: int) -> dict[str, str]:
    """{made-up project: made-up owner}, distinct projects."""
    rng = random.Random(seed)
    table: dict[str, str] = {}
    while len(table) < num_projects:
        project = _word(rng, rng.randint(2, 3))
        table.setdefault(project, f"{_word(rng, rng.randint(1, 2))} {_word(rng, 2)}")
    return table


def _record(question: str, project: str, owner: str) -> dict:
    return {"messages": [
        {"role": "user", "content": question.format(project=project)},
        {"role": "assistant", "content": f"Owner: {owner}."},
    ]}


def split(num_projects: int, held_per_project: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held_out): per project, `held_per_project` phrasings go to held-out, the rest to training."""
    if not 0 < held_per_project < len(QUESTIONS):
        raise ValueError(f"held_per_project must be in [1, {len(QUESTIONS) - 1}], got {held_per_project}")
    rng = random.Random(seed + 1)
    train, held = [], []
    for project, owner in owners(num_projects, seed).items():
        phrasings = rng.sample(QUESTIONS, len(QUESTIONS))
        held += [_record(q, project, owner) for q in phrasings[:held_per_project]]
        train += [_record(q, project, owner) for q in phrasings[held_per_project:]]
    rng.shuffle(train)
    return train, held


def write(out: Path, num_projects: int = 16, held_per_project: int = 2, seed: int = 0) -> tuple[Path, Path]:
    """Write train.jsonl and held_out.jsonl into ``out``; return their paths."""
    train, held = split(num_projects, held_per_project, seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "train.jsonl", out / "held_out.jsonl"
    for path, records in zip(paths, (train, held), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the name-card example's train/held-out JSONL.")
    parser.add_argument("--out", type=Path, required=True, help="directory for train.jsonl and held_out.jsonl")
    parser.add_argument("--projects", type=int, default=16, help="made-up projects (default: %(default)s)")
    parser.add_argument("--held-per-project", type=int, default=2,
                        help="question phrasings per project kept for held-out (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args()
    train, held = write(args.out, args.projects, args.held_per_project, args.seed)
    print(f"wrote {train} and {held}")


if __name__ == "__main__":
    main()
